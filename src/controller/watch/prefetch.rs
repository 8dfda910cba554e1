//! List pages fetched one ahead.
//!
//! A watch's first list comes in pages, and kube-runtime asks for page N+1 only once page N is
//! decoded and applied: the API server encodes, then onus decodes, then the API server encodes
//! again, so the longest list (the Pods) runs on one core at a time and is the start's longest
//! path. This layer sits under the watches' client: when a page arrives with a continue token,
//! it asks for the next page at once, in the background, and hands that answer over when the
//! watcher asks for the same page. The API server encodes page N+1 while onus decodes page N.
//!
//! It changes nothing the watcher sees. A continue token pins the list to one
//! resourceVersion, so the page fetched ahead is the page the watcher would have been given.
//! An answer fetched ahead is only handed to a request for exactly the same URL, spelled the
//! same, with the same headers: the API server reads repeated or oddly escaped parameters its
//! own way, and the Accept header decides what the body is, so no two spellings are taken for
//! one. Only a successful answer is handed over: an error fetched ahead (an expired token, a
//! refusal, an overloaded server) is asked again, so the watcher meets the server's answer to
//! its own request. A page is handed over at most [`KEEP`] after it was asked for (the watcher
//! asks within milliseconds; after that it is as if the network had been slow); a page not
//! taken is given up (its request cancelled, its answer dropped) then, when newer pages push it
//! out, when the watcher stops waiting for it, and when the client goes. Anything but a
//! first-list page goes through untouched.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, request::Parts};
use http_body_util::BodyExt;
use kube::{Client, client::Body};
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
use tokio::{sync::oneshot, task::AbortHandle, time::Instant};

/// A page fetched ahead and not taken this long after it was asked for is given up.
const KEEP: Duration = Duration::from_secs(10);
/// At most this many answers wait (a few lists are in flight at once); the oldest goes first.
const MOST: usize = 16;

type Answer = Result<(http::response::Parts, Bytes), kube::Error>;

/// A page fetched, or being fetched, ahead. Dropping it cancels the request if it is still
/// on its way.
struct Ahead {
    id: u64,
    asked: Instant,
    answer: oneshot::Receiver<Answer>,
    request: AbortHandle,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.request.abort();
    }
}

/// The watches' client, fetching list pages one ahead (see the module's documentation).
#[derive(Clone)]
pub struct Prefetch {
    inner: Client,
    ahead: Arc<Pages>,
}

type Pages = Mutex<HashMap<PageKey, Ahead>>;

/// A request exactly as sent: its path and query as spelled, and its headers (in order for
/// each name).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PageKey {
    path_and_query: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// The parameters a list's next page is asked without: kube-core sends the continue token
/// in place of the resourceVersion, and last.
const NOT_ON_NEXT_PAGE: [&str; 3] = ["continue", "resourceVersion", "resourceVersionMatch"];

impl PageKey {
    fn of(uri: &Uri, headers: &HeaderMap) -> Self {
        let mut headers: Vec<(HeaderName, HeaderValue)> = headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        headers.sort_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
        PageKey {
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string()),
            headers,
        }
    }

    fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(&self.path_and_query, |(path, _)| path)
    }

    fn query(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or("", |(_, query)| query)
    }

    /// A first-list page: a GET with a `limit`, not a watch (by parameter or by path; a path
    /// with escapes, which kube-core never sends, is not looked into).
    fn is_list_page(&self) -> bool {
        let params = || form_urlencoded::parse(self.query().as_bytes());
        params().any(|(k, _)| k == "limit")
            && !params().any(|(k, v)| k == "watch" && v != "false")
            && !self.path().contains('%')
            && !self.path().split('/').any(|segment| segment == "watch")
    }

    /// The request the watcher will make for the page `token` continues to: this one's
    /// parameters as spelled, without the resourceVersion or an earlier token, and the token
    /// last. (A different spelling only means the page is fetched again: it is never handed
    /// to a request it was not asked as.)
    fn next(&self, token: &str) -> PageKey {
        let mut query: Vec<String> = self
            .query()
            .split('&')
            .filter(|pair| {
                let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
                !NOT_ON_NEXT_PAGE.contains(&name)
            })
            .map(str::to_string)
            .collect();
        query.push(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("continue", token)
                .finish(),
        );
        PageKey {
            path_and_query: format!("{}?{}", self.path(), query.join("&")),
            headers: self.headers.clone(),
        }
    }

    /// The request for this page: `like` (the request for the page before, whose headers
    /// this key carries), asked at this key's path and query.
    fn request(&self, like: &Parts) -> Option<Request<Body>> {
        let mut uri = like.uri.clone().into_parts();
        uri.path_and_query = Some(self.path_and_query.parse().ok()?);
        let mut request = again(like);
        *request.uri_mut() = Uri::from_parts(uri).ok()?;
        Some(request)
    }
}

impl Prefetch {
    pub fn client(inner: Client) -> Client {
        let default_namespace = inner.default_namespace().to_string();
        Client::new(
            Prefetch {
                inner,
                ahead: Arc::default(),
            },
            default_namespace,
        )
    }

    fn take(&self, key: &PageKey) -> Option<Ahead> {
        let (taken, given_up) = {
            let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
            let given_up = expired(&mut ahead);
            (ahead.remove(key), given_up)
        };
        drop(given_up);
        taken
    }

    /// Asks for `key`'s page in the background, as `like` was asked.
    fn fetch_ahead(&self, key: PageKey, like: &Parts) {
        let Some(request) = key.request(like) else {
            return;
        };
        static IDS: AtomicU64 = AtomicU64::new(0);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let asked = Instant::now();
        let (tx, rx) = oneshot::channel();
        let inner = self.inner.clone();
        let pages = Arc::downgrade(&self.ahead);
        let own = key.clone();
        let task = tokio::spawn(async move {
            let fetching = fetch(&inner, request);
            tokio::pin!(fetching);
            let answer = tokio::select! {
                answer = &mut fetching => answer,
                () = tokio::time::sleep_until(asked + KEEP) => {
                    // Not taken in time: given up, which cancels this task. Taken: the watcher
                    // waits for it.
                    give_up(&pages, &own, id);
                    fetching.await
                }
            };
            if tx.send(answer).is_err() {
                return; // Nobody waiting any more: the answer is dropped.
            }
            // Not taken in time: the answer is dropped.
            tokio::time::sleep_until(asked + KEEP).await;
            give_up(&pages, &own, id);
        });
        let given_up = {
            let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
            let mut given_up = expired(&mut ahead);
            given_up.extend(ahead.remove(&key));
            while ahead.len() >= MOST {
                let Some(oldest) = ahead
                    .iter()
                    .min_by_key(|(_, a)| a.asked)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                given_up.extend(ahead.remove(&oldest));
            }
            given_up.extend(ahead.insert(
                key,
                Ahead {
                    id,
                    asked,
                    answer: rx,
                    request: task.abort_handle(),
                },
            ));
            given_up
        };
        drop(given_up);
    }

    async fn call(self, request: Request<Body>) -> Result<Response<Body>, kube::Error> {
        let key = (request.method() == Method::GET)
            .then(|| PageKey::of(request.uri(), request.headers()))
            .filter(PageKey::is_list_page);
        let Some(key) = key else {
            return self.inner.send(request).await;
        };
        let (parts, _) = request.into_parts();
        let fetched = match self.take(&key) {
            // Dropped (and its request cancelled) if this call is.
            Some(mut ahead) => (&mut ahead.answer).await.ok(),
            None => None,
        };
        let answer = match fetched {
            Some(Ok(answer)) if answer.0.status.is_success() => Ok(answer),
            // Not fetched, given up, or not a success: the server is asked now, and its answer
            // to this request is the one the watcher meets.
            _ => fetch(&self.inner, again(&parts)).await,
        };
        let (head, body) = answer?;
        if head.status.is_success()
            && let Some(token) = continue_token(&body)
        {
            self.fetch_ahead(key.next(&token), &parts);
        }
        Ok(Response::from_parts(head, Body::from(body)))
    }
}

/// The pages asked for longer than [`KEEP`] ago, taken out (to be dropped outside the lock).
fn expired(ahead: &mut HashMap<PageKey, Ahead>) -> Vec<Ahead> {
    ahead
        .extract_if(|_, a| a.asked.elapsed() >= KEEP)
        .map(|(_, a)| a)
        .collect()
}

/// Drops the page `id` under `key`, if it still waits there.
fn give_up(pages: &Weak<Pages>, key: &PageKey, id: u64) {
    let Some(pages) = pages.upgrade() else {
        return;
    };
    let given_up = {
        let mut pages = pages.lock().unwrap_or_else(|p| p.into_inner());
        match pages.get(key) {
            Some(ahead) if ahead.id == id => pages.remove(key),
            _ => None,
        }
    };
    drop(given_up);
}

/// A body-less GET made again from its parts.
fn again(parts: &Parts) -> Request<Body> {
    let mut request = Request::new(Body::empty());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    request
}

/// The answer to `request`, its body read whole.
async fn fetch(client: &Client, request: Request<Body>) -> Answer {
    let (head, body) = client.send(request).await?.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((head, body))
}

/// The list's continue token, from its `metadata` (which the API server writes before the
/// items: only the head of the page is read). None when there is none, or when the page does
/// not start as a list does.
fn continue_token(body: &[u8]) -> Option<String> {
    struct Head<'a>(&'a mut Option<String>);
    #[derive(serde::Deserialize)]
    struct ListMeta {
        #[serde(default, rename = "continue")]
        token: Option<String>,
    }
    impl<'de> Visitor<'de> for Head<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match key.as_ref() {
                    "metadata" => {
                        *self.0 = map.next_value::<ListMeta>()?.token;
                        return Ok(());
                    }
                    // Items before the metadata: the whole page would have to be read.
                    "items" => return Ok(()),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }
    let mut token = None;
    // Stopping after the metadata leaves the page unread, which serde_json then reports as
    // an error: the token read before it stands.
    let _: Result<(), serde_json::Error> =
        serde_json::Deserializer::from_slice(body).deserialize_map(Head(&mut token));
    token.filter(|t| !t.is_empty())
}

impl tower::Service<Request<Body>> for Prefetch {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Box::pin(self.clone().call(request))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use http::{HeaderMap, Request, Response};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{Api, Client, api::ListParams, client::Body};

    use super::{PageKey, Prefetch, continue_token};

    #[test]
    fn the_token_is_read_from_the_head_of_the_page() {
        let page = br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7","continue":"abc"},"items":[{"broken"#;
        assert_eq!(continue_token(page).as_deref(), Some("abc"));
        let last = br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[]}"#;
        assert_eq!(continue_token(last), None);
        let empty = br#"{"metadata":{"continue":""},"items":[]}"#;
        assert_eq!(continue_token(empty), None);
        // The items first: the token is not looked for behind them.
        let items_first = br#"{"items":[],"metadata":{"continue":"abc"}}"#;
        assert_eq!(continue_token(items_first), None);
        assert_eq!(continue_token(b"not json"), None);
        assert_eq!(continue_token(br#"{"metadata":{"continue":7}}"#), None);
    }

    fn key(uri: &str) -> PageKey {
        PageKey::of(&uri.parse().unwrap(), &HeaderMap::new())
    }

    #[test]
    fn a_page_is_known_by_its_request_exactly_as_sent() {
        let a = key("/api/v1/pods?limit=100&continue=a%2Bb");
        assert!(a.is_list_page());
        // The API server reads each of these pairs differently, so none is taken for another.
        for (one, other) in [
            ("continue=a%2Bb&limit=100", "limit=100&continue=a%2Bb"),
            (
                "labelSelector=b&labelSelector=a",
                "labelSelector=a&labelSelector=b",
            ),
            ("labelSelector=%FF", "labelSelector=%EF%BF%BD"),
            ("labelSelector=%zz", "labelSelector=%25zz"),
            ("labelSelector=a;b", "labelSelector=a%3Bb"),
        ] {
            let one = key(&format!("/api/v1/pods?limit=1&{one}"));
            let other = key(&format!("/api/v1/pods?limit=1&{other}"));
            assert_ne!(one, other);
        }
        let json = PageKey::of(
            &"/api/v1/pods?limit=1".parse().unwrap(),
            &HeaderMap::from_iter([(http::header::ACCEPT, "application/json".parse().unwrap())]),
        );
        assert_ne!(json, key("/api/v1/pods?limit=1"));
        let headers = |names: [&'static str; 2]| {
            let mut map = HeaderMap::new();
            for name in names {
                map.insert(name, "x".parse().unwrap());
            }
            PageKey::of(&"/api/v1/pods?limit=1".parse().unwrap(), &map)
        };
        assert_eq!(
            headers(["accept", "user-agent"]),
            headers(["user-agent", "accept"])
        );
        // The next page as kube-core asks for it: the token last, no resourceVersion.
        let first = key(
            "/api/v1/pods?labelSelector=x&limit=100&resourceVersion=5&resourceVersionMatch=NotOlderThan",
        );
        assert_eq!(
            first.next("a+b").path_and_query,
            "/api/v1/pods?labelSelector=x&limit=100&continue=a%2Bb"
        );
        assert_eq!(first.next("a+b").next("c"), first.next("c"));
        assert_eq!(json.next("c").headers, json.headers);
        for not_a_page in [
            "/api/v1/pods",
            "/api/v1/pods?limit=100&watch=true",
            "/api/v1/pods?watch=1&limit=5",
            "/api/v1/watch/pods?limit=5",
            "/api/v1/%77atch/pods?limit=5",
        ] {
            assert!(!key(not_a_page).is_list_page(), "{not_a_page}");
        }
    }

    fn continued(request: &Request<Body>) -> Option<String> {
        form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "continue")
            .map(|(_, v)| v.into_owned())
    }

    /// How the test server fails.
    #[derive(Clone, Copy)]
    enum Fail {
        /// An error status, with a Status body that carries a continue token (`t9`), as the
        /// API server's 410 for an expired token does.
        Status(u16),
        /// No answer: the connection fails.
        Transport,
    }

    /// A server of three pages of ConfigMaps (tokens `t1`, `t2`), which records every request
    /// (its URI, Accept header, kube's name for the request and HTTP version) and fails `t2`
    /// the first `fail` times it is asked.
    fn pages(seen: Arc<Mutex<Vec<String>>>, fail: usize) -> Client {
        failing(seen, fail, Fail::Status(410))
    }

    fn failing(seen: Arc<Mutex<Vec<String>>>, fail: usize, how: Fail) -> Client {
        let failed = Arc::new(AtomicUsize::new(0));
        let service = tower::service_fn(move |request: Request<Body>| {
            let seen = seen.clone();
            let failed = failed.clone();
            async move {
                let mut record = request.uri().to_string();
                if let Some(accept) = request.headers().get(http::header::ACCEPT) {
                    record += &format!(" accept:{}", accept.to_str().unwrap_or("?"));
                }
                if let Some(name) = request.extensions().get::<&'static str>() {
                    record += &format!(" ext:{name}");
                }
                record += &format!(" {:?}", request.version());
                seen.lock().unwrap().push(record);
                let (status, body) = match continued(&request).as_deref() {
                    None => (200, page("cm-1", Some("t1"))),
                    Some("t1") => (200, page("cm-2", Some("t2"))),
                    Some("t2") if failed.fetch_add(1, Ordering::SeqCst) < fail => match how {
                        Fail::Status(code) => (
                            code,
                            format!(
                                r#"{{"kind":"Status","apiVersion":"v1","metadata":{{"continue":"t9"}},"status":"Failure","reason":"Failed","code":{code},"message":"no"}}"#
                            ),
                        ),
                        Fail::Transport => {
                            return Err(std::io::Error::other("connection reset"));
                        }
                    },
                    Some("t2") => (200, page("cm-3", None)),
                    Some(_) => (404, r#"{"kind":"Status","code":404}"#.to_string()),
                };
                Ok(Response::builder()
                    .status(status)
                    .body(Body::from(body.into_bytes()))
                    .unwrap())
            }
        });
        Prefetch::client(Client::new(service, "default"))
    }

    fn page(name: &str, token: Option<&str>) -> String {
        let token = token.map_or(String::new(), |t| format!(r#","continue":"{t}""#));
        format!(
            r#"{{"kind":"ConfigMapList","apiVersion":"v1","metadata":{{"resourceVersion":"5"{token}}},"items":[{{"metadata":{{"name":"{name}","namespace":"a"}}}}]}}"#
        )
    }

    fn asked(seen: &Mutex<Vec<String>>, token: &str) -> usize {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|uri| uri.contains(&format!("continue={token}")))
            .count()
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..2000 {
            if done() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("{what}");
    }

    async fn until_asked(seen: &Mutex<Vec<String>>, token: &str) {
        let what = format!("page {token} was not fetched ahead");
        until(&what, || asked(seen, token) > 0).await;
    }

    fn names(list: &kube::core::ObjectList<ConfigMap>) -> Vec<String> {
        list.items
            .iter()
            .map(|c| c.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[tokio::test]
    async fn the_next_page_is_fetched_ahead_once_and_handed_over() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let api = Api::<ConfigMap>::all(pages(seen.clone(), 0));
        let lp = ListParams::default().limit(1).labels("team=a");
        let first = api.list(&lp).await.unwrap();
        assert_eq!(names(&first), ["cm-1"]);
        // Before the watcher asks for it, the next page is on its way.
        until_asked(&seen, "t1").await;
        let second = api.list(&lp.clone().continue_token("t1")).await.unwrap();
        assert_eq!(names(&second), ["cm-2"]);
        assert_eq!(second.metadata.continue_.as_deref(), Some("t2"));
        until_asked(&seen, "t2").await;
        let third = api.list(&lp.clone().continue_token("t2")).await.unwrap();
        assert_eq!(names(&third), ["cm-3"]);
        // Every page was asked of the server once, with the list's selector.
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen.iter().all(|uri| uri.contains("labelSelector=team")));
    }

    #[tokio::test]
    async fn a_page_fetched_ahead_goes_to_no_other_request() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = pages(seen.clone(), 0);
        let api = Api::<ConfigMap>::all(client.clone());
        api.list(&ListParams::default().limit(1)).await.unwrap();
        until_asked(&seen, "t1").await;
        // The same token with another selector is another list: asked of the server.
        let other = ListParams::default()
            .limit(1)
            .labels("team=a")
            .continue_token("t1");
        api.list(&other).await.unwrap();
        assert_eq!(asked(&seen, "t1"), 2, "{:?}", seen.lock().unwrap());
        assert!(seen.lock().unwrap()[2].contains("labelSelector=team"));
        // The URL of the page fetched ahead, asked for another representation: asked of the
        // server.
        let metadata_only = Request::get("/api/v1/configmaps?&limit=1&continue=t1")
            .header(
                http::header::ACCEPT,
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            )
            .body(Vec::new())
            .unwrap();
        client.request_text(metadata_only).await.unwrap();
        assert_eq!(asked(&seen, "t1"), 3, "{:?}", seen.lock().unwrap());
    }

    #[tokio::test]
    async fn a_page_is_asked_ahead_with_the_headers_of_the_page_before() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = pages(seen.clone(), 0);
        let table = "application/json;as=Table;g=meta.k8s.io;v=v1";
        let get = |uri: &str| {
            Request::get(uri)
                .header(http::header::ACCEPT, table)
                .body(Vec::new())
                .unwrap()
        };
        client
            .request_text(get("/api/v1/configmaps?limit=1"))
            .await
            .unwrap();
        until_asked(&seen, "t1").await;
        let ahead = seen.lock().unwrap()[1].clone();
        assert!(ahead.contains(&format!("accept:{table} ")), "{ahead}");
        client
            .request_text(get("/api/v1/configmaps?limit=1&continue=t1"))
            .await
            .unwrap();
        assert_eq!(asked(&seen, "t1"), 1, "{:?}", seen.lock().unwrap());
    }

    #[tokio::test]
    async fn a_repeated_parameter_is_asked_ahead_as_it_was_spelled() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = pages(seen.clone(), 0);
        let get = |uri: &str| Request::get(uri).body(Vec::new()).unwrap();
        client
            .request_text(get(
                "/api/v1/configmaps?labelSelector=b&labelSelector=a&limit=1",
            ))
            .await
            .unwrap();
        until_asked(&seen, "t1").await;
        let ahead = seen.lock().unwrap()[1].clone();
        assert!(
            ahead.contains("?labelSelector=b&labelSelector=a&limit=1&continue=t1"),
            "{ahead}"
        );
        // The other order is another list to the API server (it reads the first).
        client
            .request_text(get(
                "/api/v1/configmaps?labelSelector=a&labelSelector=b&limit=1&continue=t1",
            ))
            .await
            .unwrap();
        assert_eq!(asked(&seen, "t1"), 2, "{:?}", seen.lock().unwrap());
    }

    #[tokio::test]
    async fn an_error_fetched_ahead_is_asked_again() {
        let lp = ListParams::default().limit(1);
        for how in [
            Fail::Status(410),
            Fail::Status(429),
            Fail::Status(500),
            Fail::Transport,
        ] {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let api = Api::<ConfigMap>::all(failing(seen.clone(), 1, how));
            api.list(&lp).await.unwrap();
            until_asked(&seen, "t1").await;
            api.list(&lp.clone().continue_token("t1")).await.unwrap();
            until_asked(&seen, "t2").await;
            // The answer fetched ahead failed; the watcher meets the server's answer to its
            // own request.
            let third = api.list(&lp.clone().continue_token("t2")).await.unwrap();
            assert_eq!(names(&third), ["cm-3"]);
            assert_eq!(asked(&seen, "t2"), 2);
        }

        // And when the server still refuses, the refusal is what the watcher meets, and the
        // token in the refusal is not followed.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let api = Api::<ConfigMap>::all(pages(seen.clone(), 2));
        api.list(&lp).await.unwrap();
        until_asked(&seen, "t1").await;
        api.list(&lp.clone().continue_token("t1")).await.unwrap();
        until_asked(&seen, "t2").await;
        let err = api
            .list(&lp.clone().continue_token("t2"))
            .await
            .expect_err("the expired token's answer is handed over");
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 410),
            "{err:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(asked(&seen, "t9"), 0, "{:?}", seen.lock().unwrap());
    }

    #[tokio::test]
    async fn a_page_is_asked_ahead_as_kube_asked_the_one_before() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let api = Api::<ConfigMap>::all(pages(seen.clone(), 0));
        api.list(&ListParams::default().limit(1)).await.unwrap();
        until_asked(&seen, "t1").await;
        let seen = seen.lock().unwrap();
        assert!(seen[0].ends_with(" ext:list HTTP/1.1"), "{seen:?}");
        assert!(seen[1].ends_with(" ext:list HTTP/1.1"), "{seen:?}");
    }

    #[tokio::test]
    async fn a_watch_is_not_a_list_page() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = pages(seen.clone(), 0);
        // Even with a limit, and an answer that has the look of a page with more to come.
        let watch = Request::get("/api/v1/configmaps?limit=1&watch=true")
            .body(Vec::new())
            .unwrap();
        client.request_text(watch).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(asked(&seen, "t1"), 0, "{:?}", seen.lock().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_is_handed_over_only_while_fresh() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let api = Api::<ConfigMap>::all(pages(seen.clone(), 0));
        let lp = ListParams::default().limit(1);
        api.list(&lp).await.unwrap();
        until_asked(&seen, "t1").await;
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        // Asked for again: the watcher meets the server's answer of now.
        api.list(&lp.clone().continue_token("t1")).await.unwrap();
        assert_eq!(asked(&seen, "t1"), 2, "{:?}", seen.lock().unwrap());
    }

    /// Counts its drops: held by a request the server never answers.
    struct Held(Arc<AtomicUsize>);
    impl Drop for Held {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A server that answers first pages (token `t1`) and never answers a continued one.
    fn stuck(asked: Arc<AtomicUsize>, given_up: Arc<AtomicUsize>) -> Client {
        let service = tower::service_fn(move |request: Request<Body>| {
            let asked = asked.clone();
            let given_up = given_up.clone();
            async move {
                if continued(&request).is_some() {
                    asked.fetch_add(1, Ordering::SeqCst);
                    let _held = Held(given_up);
                    futures::future::pending::<()>().await;
                }
                Ok::<_, std::convert::Infallible>(Response::new(Body::from(
                    page("cm-1", Some("t1")).into_bytes(),
                )))
            }
        });
        Prefetch::client(Client::new(service, "default"))
    }

    #[tokio::test]
    async fn a_page_nobody_takes_is_given_up() {
        let asked = Arc::new(AtomicUsize::new(0));
        let given_up = Arc::new(AtomicUsize::new(0));
        let client = stuck(asked.clone(), given_up.clone());
        let lp = ListParams::default().limit(1);
        // One more list than pages are kept for: the oldest page fetched ahead is given up.
        for namespace in 0..=super::MOST {
            let api = Api::<ConfigMap>::namespaced(client.clone(), &format!("n{namespace}"));
            api.list(&lp).await.unwrap();
            until("the next page asked", || {
                asked.load(Ordering::SeqCst) == namespace + 1
            })
            .await;
            if namespace < super::MOST {
                assert_eq!(given_up.load(Ordering::SeqCst), 0, "at n{namespace}");
            }
        }
        until("the oldest page given up", || {
            given_up.load(Ordering::SeqCst) == 1
        })
        .await;

        // A watcher that stops waiting for its page gives it up too.
        // (n0's page was the one given up; n1's still waits.)
        let api = Api::<ConfigMap>::namespaced(client.clone(), "n1");
        let second = lp.clone().continue_token("t1");
        let waiting = api.list(&second);
        let stopped = tokio::time::timeout(std::time::Duration::from_millis(50), waiting).await;
        assert!(stopped.is_err(), "the stuck page was answered");
        until("the page the watcher stopped waiting for given up", || {
            given_up.load(Ordering::SeqCst) == 2
        })
        .await;
        // It was given up, not asked again.
        assert_eq!(asked.load(Ordering::SeqCst), super::MOST + 1);

        // The rest go when the client does.
        drop((api, client));
        until("every page given up with the client", || {
            given_up.load(Ordering::SeqCst) == super::MOST + 1
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_not_taken_in_time_is_given_up() {
        let asked = Arc::new(AtomicUsize::new(0));
        let given_up = Arc::new(AtomicUsize::new(0));
        let client = stuck(asked.clone(), given_up.clone());
        let api = Api::<ConfigMap>::all(client.clone());
        api.list(&ListParams::default().limit(1)).await.unwrap();
        until("the next page asked", || asked.load(Ordering::SeqCst) == 1).await;
        tokio::time::sleep(super::KEEP).await;
        until("the page given up in time", || {
            given_up.load(Ordering::SeqCst) == 1
        })
        .await;
    }
}
