//! Objects the watches saw but could not decode, per kind: their facts are unknown (the last
//! readable facts of such an object stay), so a policy that governs them cannot claim to be
//! current about them, and its status says so.

use std::collections::BTreeMap;

use super::Key;

/// The undecodable objects of each kind (`K`: the kind), with why; and, while a (re)list of a
/// kind runs, those of the list, which replace the kind's set when the list is complete (until
/// then the objects known undecodable stay so).
#[derive(Debug)]
pub struct Undecodable<K> {
    kinds: BTreeMap<K, Kind>,
}

#[derive(Debug, Default)]
struct Kind {
    now: BTreeMap<Key, String>,
    listing: Option<BTreeMap<Key, String>>,
}

impl<K> Default for Undecodable<K> {
    fn default() -> Self {
        Undecodable {
            kinds: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy> Undecodable<K> {
    /// Records an object of `kind` from a watch event: decodable (`error` none) or not
    /// (`listing`: from a list in progress, which changes nothing until the list is complete).
    /// Returns whether the set of undecodable objects changed.
    pub fn set(&mut self, kind: K, key: &Key, error: Option<&str>, listing: bool) -> bool {
        let entry = self.kinds.entry(kind).or_default();
        if listing {
            if let (Some(list), Some(error)) = (entry.listing.as_mut(), error) {
                list.insert(key.clone(), error.to_string());
            }
            return false;
        }
        match error {
            None => entry.now.remove(key).is_some(),
            Some(error) => entry
                .now
                .insert(key.clone(), error.to_string())
                .is_none_or(|before| before != error),
        }
    }

    /// A deleted object of `kind`: no longer undecodable. Returns whether that changed.
    pub fn delete(&mut self, kind: K, key: &Key) -> bool {
        self.set(kind, key, None, false)
    }

    /// A (re)list of `kind` starts.
    pub fn list_start(&mut self, kind: K) {
        self.kinds.entry(kind).or_default().listing = Some(BTreeMap::new());
    }

    /// The (re)list of `kind` is complete. Returns whether the set of undecodable objects
    /// changed.
    pub fn list_done(&mut self, kind: K) -> bool {
        let entry = self.kinds.entry(kind).or_default();
        match entry.listing.take() {
            Some(listed) if listed != entry.now => {
                entry.now = listed;
                true
            }
            _ => false,
        }
    }

    /// Every undecodable object now: kind, key and why, by kind then key.
    pub fn iter(&self) -> impl Iterator<Item = (K, &Key, &str)> {
        self.kinds.iter().flat_map(|(kind, k)| {
            k.now
                .iter()
                .map(move |(key, error)| (*kind, key, error.as_str()))
        })
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.kinds.values().all(|k| k.now.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key::new(Some("shop"), name)
    }

    #[test]
    fn an_object_is_undecodable_until_it_decodes_or_goes() {
        let mut u = Undecodable::default();
        assert!(u.set("Pod", &key("a"), Some("bad"), false));
        assert!(!u.set("Pod", &key("a"), Some("bad"), false), "no change");
        assert!(
            u.set("Pod", &key("a"), Some("worse"), false),
            "a new reason"
        );
        assert!(u.set("Pod", &key("b"), Some("bad"), false));
        assert_eq!(u.iter().count(), 2);
        assert!(u.set("Pod", &key("a"), None, false));
        assert!(!u.set("Pod", &key("a"), None, false));
        assert!(u.delete("Pod", &key("b")));
        assert!(u.is_empty());
    }

    #[test]
    fn a_relist_replaces_the_set_only_when_complete() {
        let mut u = Undecodable::default();
        u.set("Pod", &key("gone"), Some("bad"), false);
        u.list_start("Pod");
        assert!(!u.set("Pod", &key("new"), Some("bad"), true));
        assert!(!u.set("Pod", &key("fine"), None, true));
        // Until the list is complete, what was known stays.
        let names: Vec<&str> = u.iter().map(|(_, k, _)| k.name.as_str()).collect();
        assert_eq!(names, ["gone"]);
        assert!(u.list_done("Pod"));
        let names: Vec<&str> = u.iter().map(|(_, k, _)| k.name.as_str()).collect();
        assert_eq!(names, ["new"]);
        // A list that finds the same set changes nothing.
        u.list_start("Pod");
        u.set("Pod", &key("new"), Some("bad"), true);
        assert!(!u.list_done("Pod"));
        // Another kind is apart.
        u.set("Deployment", &key("d"), Some("bad"), false);
        assert_eq!(u.iter().count(), 2);
    }
}
