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

/// At most this many bytes of an error are kept (the log has it whole): an error can quote a
/// value of the object, up to its size.
const MAX_REASON: usize = 300;

/// The reason kept for an error: without serde's position (`at line 1 column 812`), which moves
/// whenever anything before the bad field changes length (a label, an annotation, the
/// resourceVersion's digits), so that an unchanged defect is no new reason and rewrites no
/// status; cut to [`MAX_REASON`] bytes.
fn reason(error: &str) -> &str {
    let mut text = error;
    if let Some((before, position)) = error.rsplit_once(" at line ")
        && let Some((line, column)) = position.split_once(" column ")
        && !line.is_empty()
        && line.bytes().all(|b| b.is_ascii_digit())
        && !column.is_empty()
        && column.bytes().all(|b| b.is_ascii_digit())
    {
        text = before;
    }
    let mut end = text.len().min(MAX_REASON);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl<K: Ord + Copy> Undecodable<K> {
    /// Records an object of `kind` from a watch event: decodable (`error` none) or not
    /// (`listing`: from a list in progress, which changes nothing until the list is complete).
    /// Returns whether the set of undecodable objects changed.
    pub fn set(&mut self, kind: K, key: &Key, error: Option<&str>, listing: bool) -> bool {
        let error = error.map(reason);
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
    fn the_same_defect_at_another_position_is_no_new_reason_and_a_reason_is_bounded() {
        // serde_json's errors end with the position, which moves with every change of length
        // before the bad field (an annotation, the resourceVersion): the status would be
        // rewritten each time.
        let at = |column: usize| {
            let text = format!(
                r#"{{"metadata": {{"annotations": {{"a": "{}"}}}}, "containers": 7}}"#,
                "x".repeat(column)
            );
            #[derive(Debug, serde::Deserialize)]
            #[allow(dead_code)]
            struct Spec {
                containers: Vec<String>,
            }
            serde_json::from_str::<Spec>(&text)
                .expect_err("containers is no list")
                .to_string()
        };
        let (first, second) = (at(1), at(20));
        assert_ne!(first, second, "the positions differ");
        let mut u = Undecodable::default();
        assert!(u.set("Pod", &key("a"), Some(&first), false));
        assert!(
            !u.set("Pod", &key("a"), Some(&second), false),
            "the same defect elsewhere: no change"
        );
        let (_, _, why) = u.iter().next().expect("recorded");
        assert!(why.starts_with("invalid type: integer `7`"), "{why}");
        assert!(!why.contains("column"), "{why}");
        // An error quoting a huge value is kept cut.
        let huge = format!("invalid type: string \"{}é\"", "x".repeat(10_000));
        u.set("Pod", &key("b"), Some(&huge), false);
        assert!(u.iter().all(|(_, _, why)| why.len() <= MAX_REASON));
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
