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
//! resourceVersion, so the page fetched ahead is the page the watcher would have been given;
//! an answer fetched ahead is only ever handed to a request for the same path and the same
//! query (parameter by parameter), and otherwise left to expire; an error fetched ahead (an
//! expired token, a refusal) is handed over as the watcher's own request would have met it.
//! Anything else goes through untouched.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Method, Request, Response, Uri, request::Parts};
use http_body_util::BodyExt;
use kube::{Client, client::Body};
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
use tokio::sync::oneshot;

/// An answer fetched ahead and not taken is dropped after this long (a continue token
/// expires after about five minutes anyway).
const KEEP: Duration = Duration::from_secs(60);
/// At most this many answers wait (a few lists are in flight at once); the oldest goes first.
const MOST: usize = 16;

type Answer = Result<(http::response::Parts, Bytes), kube::Error>;

/// A page fetched, or being fetched, ahead.
struct Ahead {
    asked: Instant,
    answer: oneshot::Receiver<Answer>,
}

/// The watches' client, fetching list pages one ahead (see the module's documentation).
#[derive(Clone)]
pub struct Prefetch {
    inner: Client,
    ahead: Arc<Mutex<HashMap<PageKey, Ahead>>>,
}

/// A request's path and its query parameters, decoded and sorted: two requests for the same
/// page have the same key however their queries were spelled.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PageKey {
    path: String,
    query: Vec<(String, String)>,
}

impl PageKey {
    fn of(uri: &Uri) -> Self {
        let mut query: Vec<(String, String)> =
            form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        query.sort();
        PageKey {
            path: uri.path().to_string(),
            query,
        }
    }

    /// A first-list page: a GET with a `limit`, not a watch.
    fn is_list_page(&self) -> bool {
        let has = |name: &str| self.query.iter().any(|(k, _)| k == name);
        has("limit") && !self.query.iter().any(|(k, v)| k == "watch" && v != "false")
    }

    /// The same list's page that `token` continues to.
    fn next(&self, token: &str) -> PageKey {
        let mut query: Vec<(String, String)> = self
            .query
            .iter()
            .filter(|(k, _)| k != "continue")
            .cloned()
            .collect();
        query.push(("continue".into(), token.into()));
        query.sort();
        PageKey {
            path: self.path.clone(),
            query,
        }
    }

    fn uri(&self, like: &Uri) -> Option<Uri> {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.query)
            .finish();
        let mut parts = like.clone().into_parts();
        parts.path_and_query = Some(format!("{}?{query}", self.path).parse().ok()?);
        Uri::from_parts(parts).ok()
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

    fn take(&self, key: &PageKey) -> Option<oneshot::Receiver<Answer>> {
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        ahead.retain(|_, a| a.asked.elapsed() < KEEP);
        ahead.remove(key).map(|a| a.answer)
    }

    /// Asks for `key`'s page in the background, with the headers of the request before it.
    fn fetch_ahead(&self, key: PageKey, like: &Parts) {
        let Some(uri) = key.uri(&like.uri) else {
            return;
        };
        let mut request = Request::new(Body::empty());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = uri;
        *request.headers_mut() = like.headers.clone();
        let (tx, rx) = oneshot::channel();
        {
            let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
            while ahead.len() >= MOST {
                let Some(oldest) = ahead
                    .iter()
                    .min_by_key(|(_, a)| a.asked)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                ahead.remove(&oldest);
            }
            ahead.insert(
                key,
                Ahead {
                    asked: Instant::now(),
                    answer: rx,
                },
            );
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            // Nobody waiting any more (the list was given up): the answer is dropped.
            let _ = tx.send(fetch(&inner, request).await);
        });
    }

    async fn call(self, request: Request<Body>) -> Result<Response<Body>, kube::Error> {
        let key = (request.method() == Method::GET)
            .then(|| PageKey::of(request.uri()))
            .filter(PageKey::is_list_page);
        let Some(key) = key else {
            return self.inner.send(request).await;
        };
        let (parts, _) = request.into_parts();
        let answer = match self.take(&key) {
            Some(ahead) => match ahead.await {
                Ok(answer) => answer,
                // The fetch was dropped unanswered: ask now.
                Err(_) => fetch(&self.inner, again(&parts)).await,
            },
            None => fetch(&self.inner, again(&parts)).await,
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

/// A body-less GET made again from its parts.
fn again(parts: &Parts) -> Request<Body> {
    let mut request = Request::new(Body::empty());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.headers_mut() = parts.headers.clone();
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
    use std::sync::{Arc, Mutex};

    use http::{Request, Response};
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

    #[test]
    fn a_page_is_known_by_its_path_and_every_parameter_however_spelled() {
        let a = PageKey::of(&"/api/v1/pods?limit=100&continue=a%2Bb".parse().unwrap());
        let b = PageKey::of(&"/api/v1/pods?continue=a%2Bb&limit=100".parse().unwrap());
        assert_eq!(a, b);
        assert!(a.is_list_page());
        let other_selector = PageKey::of(
            &"/api/v1/pods?limit=100&continue=a%2Bb&labelSelector=x"
                .parse()
                .unwrap(),
        );
        assert_ne!(a, other_selector);
        let first = PageKey::of(&"/api/v1/pods?limit=100".parse().unwrap());
        assert_eq!(first.next("a+b"), a);
        assert_eq!(a.next("c"), first.next("c"));
        let uri = a.uri(&"/api/v1/pods?limit=100".parse().unwrap()).unwrap();
        assert_eq!(PageKey::of(&uri), a);
        for not_a_page in [
            "/api/v1/pods",
            "/api/v1/pods?limit=100&watch=true",
            "/api/v1/pods?watch=1&limit=5",
        ] {
            assert!(!PageKey::of(&not_a_page.parse().unwrap()).is_list_page());
        }
    }

    /// A server of three pages of ConfigMaps (tokens `t1`, `t2`), which records every request
    /// and answers `t2` with `gone` when told to.
    fn pages(seen: Arc<Mutex<Vec<String>>>, gone: bool) -> Client {
        let service = tower::service_fn(move |request: Request<Body>| {
            let seen = seen.clone();
            async move {
                let uri = request.uri().to_string();
                seen.lock().unwrap().push(uri.clone());
                let token = PageKey::of(request.uri())
                    .query
                    .into_iter()
                    .find(|(k, _)| k == "continue")
                    .map(|(_, v)| v);
                let (status, body) = match token.as_deref() {
                    None => (200, page("cm-1", Some("t1"))),
                    Some("t1") => (200, page("cm-2", Some("t2"))),
                    Some("t2") if gone => (
                        410,
                        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Expired","code":410,"message":"too old"}"#
                            .to_string(),
                    ),
                    Some("t2") => (200, page("cm-3", None)),
                    Some(other) => panic!("unknown token {other}"),
                };
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(status)
                        .body(Body::from(body.into_bytes()))
                        .unwrap(),
                )
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

    async fn until_asked(seen: &Mutex<Vec<String>>, token: &str) {
        for _ in 0..200 {
            if asked(seen, token) > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!(
            "page {token} was not fetched ahead: {:?}",
            seen.lock().unwrap()
        );
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
        let api = Api::<ConfigMap>::all(pages(seen.clone(), false));
        let lp = ListParams::default().limit(1);
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
        // Every page was asked of the server once.
        assert_eq!(seen.lock().unwrap().len(), 3, "{:?}", seen.lock().unwrap());
        assert_eq!((asked(&seen, "t1"), asked(&seen, "t2")), (1, 1));
    }

    #[tokio::test]
    async fn a_page_fetched_ahead_goes_to_no_other_request() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let api = Api::<ConfigMap>::all(pages(seen.clone(), false));
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
    }

    #[tokio::test]
    async fn an_error_fetched_ahead_is_the_watchers_own() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let api = Api::<ConfigMap>::all(pages(seen.clone(), true));
        let lp = ListParams::default().limit(1);
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
        assert_eq!(asked(&seen, "t2"), 1);
    }
}
