//! One canonical request path, decided once, before the access gate and the router.
//!
//! ```text
//! raw path --percent-decode (UTF-8)--> drop empty and "." segments --> canonical path
//!          "..", "%" left after decoding, a byte outside RFC 3986 pchar --> 400
//! canonical path --> access gate (which channel?) --> router (Path extractors)
//! ```
//!
//! The canonical path holds only bytes that need no percent-encoding, so the router's
//! own decoding of it changes nothing: the channel the gate checks is, by construction,
//! the channel the handler serves (`/hls/%6Eews/...` is `/hls/news/...` for both).
//! Channel names are lowercase; a name with other letters names no channel, for the
//! gate and the handlers alike.

use axum::extract::Request;
use axum::http::{uri, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use percent_encoding::percent_decode_str;

use super::hls::{respond, NO_STORE};

/// Why a request path has no canonical form.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    #[error("the request path is not UTF-8 once decoded")]
    NotUtf8,
    #[error("the request path has a \"..\" segment")]
    DotDot,
    #[error("the request path holds {0:?}, which no Sluice URL uses")]
    Forbidden(char),
}

/// Bytes a decoded path segment may hold: RFC 3986 `pchar` without `%`.
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(c)
}

/// The canonical form of a raw (still percent-encoded) request path.
pub(crate) fn canonical_path(raw: &str) -> Result<String, PathError> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::NotUtf8)?;
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(PathError::DotDot),
            s => {
                if let Some(c) = s.chars().find(|c| !allowed(*c)) {
                    return Err(PathError::Forbidden(c));
                }
                segments.push(s);
            }
        }
    }
    let mut path = format!("/{}", segments.join("/"));
    if decoded.ends_with('/') && !segments.is_empty() {
        path.push('/');
    }
    Ok(path)
}

/// The request's URI with its path made canonical (query kept as sent).
pub(crate) fn canonical_uri(uri: &Uri) -> Result<Uri, PathError> {
    let path = canonical_path(uri.path())?;
    if path == uri.path() {
        return Ok(uri.clone());
    }
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri::Parts::from(uri.clone());
    // Only bytes that parse in a path (checked above) and the query as it was parsed.
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| PathError::Forbidden('?'))?,
    );
    Uri::from_parts(parts).map_err(|_| PathError::Forbidden('?'))
}

/// `app` behind [`canonicalize`]: a layer added inside a router runs after routing, so
/// the rewrite wraps the whole router (as the fallback of an empty one, which routes
/// nothing and takes any request body).
pub(crate) fn outside(app: Router) -> Router {
    Router::new().fallback_service(tower::Layer::layer(
        &axum::middleware::from_fn(canonicalize),
        app,
    ))
}

/// Rewrites the request's path to its canonical form, or answers 400.
async fn canonicalize(mut request: Request, next: Next) -> Response {
    match canonical_uri(request.uri()) {
        Ok(uri) => {
            *request.uri_mut() = uri;
            next.run(request).await
        }
        Err(e) => respond(
            StatusCode::BAD_REQUEST,
            NO_STORE,
            "text/plain; charset=utf-8",
            format!("{e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_normalises_once() {
        let cases = [
            ("/hls/%6Eews/index.m3u8", "/hls/news/index.m3u8"),
            (
                "/hls/n%65ws/source/index.m3u8",
                "/hls/news/source/index.m3u8",
            ),
            (
                "//hls///news/./source/index.m3u8",
                "/hls/news/source/index.m3u8",
            ),
            ("/vod/%6Eews/1/index.m3u8", "/vod/news/1/index.m3u8"),
            ("/", "/"),
            ("", "/"),
            ("/api/v1/channels/", "/api/v1/channels/"),
        ];
        for (raw, want) in cases {
            assert_eq!(canonical_path(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses_what_decodes_to_something_else_again() {
        assert_eq!(canonical_path("/hls/%2e%2e/x"), Err(PathError::DotDot));
        assert_eq!(canonical_path("/hls/../x"), Err(PathError::DotDot));
        // Double encoding: "%256E" decodes to "%6E", which a second decoding would read
        // as "n".
        assert_eq!(
            canonical_path("/hls/%256Eews/x"),
            Err(PathError::Forbidden('%'))
        );
        assert_eq!(canonical_path("/hls/a%2Fb"), Ok("/hls/a/b".into()));
        assert_eq!(canonical_path("/hls/%00"), Err(PathError::Forbidden('\0')));
        assert_eq!(canonical_path("/hls/%ff"), Err(PathError::NotUtf8));
        assert_eq!(canonical_path("/hls/a%20b"), Err(PathError::Forbidden(' ')));
    }

    #[test]
    fn keeps_the_query() {
        let uri: Uri = "/hls/%6Eews/source/index.m3u8?_HLS_msn=5&_HLS_part=1"
            .parse()
            .expect("uri");
        let got = canonical_uri(&uri).expect("canonical");
        assert_eq!(got.path(), "/hls/news/source/index.m3u8");
        assert_eq!(got.query(), Some("_HLS_msn=5&_HLS_part=1"));
    }
}

/// The gate and the router together, behind the canonical path: whatever path a viewer
/// sends, a private channel is served only with a valid token.
#[cfg(test)]
mod gate_tests {
    use proptest::prelude::*;

    use super::*;
    use crate::http::probe::{Probe, PRIVATE};

    fn served(app: &Probe, rt: &tokio::runtime::Runtime, path: &str) -> Option<(u16, String)> {
        rt.block_on(app.serve(path))
    }

    fn token() -> String {
        Probe::token()
    }

    fn app() -> Probe {
        Probe::new()
    }

    #[test]
    fn the_reviewed_requests_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let app = app();
        for path in [
            "/hls/news/index.m3u8",
            "/hls/%6Eews/index.m3u8",
            "/hls/n%65ws/source/index.m3u8",
            "/vod/%6Eews/1/index.m3u8",
            "//hls/news/index.m3u8",
            "/hls/./news/index.m3u8",
            "/hls/%6E%65%77%73/source/1/0.m4s",
        ] {
            let got = served(&app, &rt, path);
            assert!(matches!(got, Some((403 | 400 | 404, _))), "{path}: {got:?}");
        }
        let t = token();
        let got = served(&app, &rt, &format!("/t/{t}/hls/%6Eews/index.m3u8"));
        assert_eq!(got, Some((200, "news".into())));
        let got = served(&app, &rt, "/hls/%6Fther/index.m3u8");
        assert_eq!(got, Some((200, "other".into())));
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("hls".to_string()),
            Just("vod".to_string()),
            Just("t".to_string()),
            Just("news".to_string()),
            Just("%6Eews".to_string()),
            Just("n%65ws".to_string()),
            Just("%6e%65%77%73".to_string()),
            Just("NEWS".to_string()),
            Just("news.mp4".to_string()),
            Just("other".to_string()),
            Just("source".to_string()),
            Just("index.m3u8".to_string()),
            Just("1".to_string()),
            Just("0.1.m4s".to_string()),
            Just(String::new()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2F".to_string()),
            Just("%252F".to_string()),
            Just("%256Eews".to_string()),
            Just("v1.k1.9.00.00".to_string()),
            "[a-z0-9%./]{0,8}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn a_private_channel_is_never_served_without_its_token(
            segments in proptest::collection::vec(segment(), 1..8),
            leading in "/{1,3}",
            query in prop_oneof![Just(String::new()), Just("?_HLS_msn=1".to_string())],
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let path = format!("{leading}{}{query}", segments.join("/"));
            if let Some((200, channel)) = served(&app(), &rt, &path) {
                prop_assert_ne!(channel, PRIVATE, "served {} without a token", path);
            }
        }

        #[test]
        fn a_valid_token_serves_exactly_the_channel_it_names(
            name in prop_oneof![Just("news"), Just("%6Eews"), Just("n%65ws"), Just("other")],
            tail in prop_oneof![Just("index.m3u8"), Just("source/index.m3u8"), Just("source/3/0.m4s")],
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let path = format!("/t/{}/hls/{name}/{tail}", token());
            let got = served(&app(), &rt, &path);
            let want = canonical_path(&format!("/{name}")).expect("name")[1..].to_string();
            prop_assert_eq!(got, Some((200, want)));
        }
    }
}
