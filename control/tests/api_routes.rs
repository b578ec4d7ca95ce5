//! The REST API in process (the router driven directly, a SQLite store in a temp dir): every
//! route `/api/openapi.json` names is served, and bad input on every route is a 4xx JSON
//! error, never a 500 or a panic.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tandem_control::openapi::ROUTES;
use tandem_control::{App, ControlConfig, Store, api, tokens};
use tower::ServiceExt;

async fn app() -> (tempfile::TempDir, axum::Router, Arc<App>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    store.migrate().await.unwrap();
    let keys = Arc::new(
        tokens::Keys::from_secrets("k1", vec![("k1".into(), vec![1; 32])], Duration::from_secs(3600)).unwrap(),
    );
    let mut config = ControlConfig::default();
    config.rate_limits.requests_per_ip = 1_000_000;
    config.rate_limits.writes_per_user = 1_000_000;
    config.rate_limits.auth_per_ip = 1_000_000;
    let app = App::new(store, keys, &config).await;
    (dir, api::router(Arc::clone(&app)), app)
}

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path).header("host", "127.0.0.1:8080");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_vec())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn path_for(template: &str, doc: &str, user: &str) -> String {
    template.replace("{id}", doc).replace("{user}", user).replace("{email}", "cy@example.com")
}

#[tokio::test]
async fn every_described_route_is_served_and_bad_input_is_a_4xx() {
    let (_dir, router, _app) = app().await;
    let (status, ada) = call(
        &router,
        "POST",
        "/api/auth/signup",
        None,
        Some(br#"{"email":"ada@example.com","password":"pw-long-enough","name":"Ada"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let token = ada["access_token"].as_str().unwrap().to_owned();
    let (_, doc) = call(&router, "POST", "/api/documents", Some(&token), Some(br#"{"title":"t"}"#)).await;
    let doc = doc["id"].as_str().unwrap().to_owned();
    let user = ada["user"]["id"].as_str().unwrap().to_owned();

    let junk: [&[u8]; 7] = [
        b"",
        b"not json",
        b"[1,2,3]",
        b"{\"x\":1}",
        &[0xff, 0xfe, 0x00],
        b"{\"email\":{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}",
        b"{\"title\":\"\\u0000\",\"role\":\"god\",\"email\":\"\",\"user\":\"\",\"refresh_token\":7}",
    ];
    for route in ROUTES {
        let method = route.method.to_uppercase();
        let path = path_for(route.path, &doc, "nobody");
        // Served: not the fallback's no_route.
        let (status, body) = call(&router, &method, &path, Some(&token), route.body.map(|_| b"{}".as_slice())).await;
        assert_ne!(body["error"]["code"], "no_route", "{method} {path} is described but not served");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        for body in junk {
            let (status, answer) = call(&router, &method, &path, Some(&token), Some(body)).await;
            assert!(
                status.is_client_error() || status.is_success(),
                "{method} {path} with {:?}: {status} {answer}",
                String::from_utf8_lossy(body)
            );
            if status.is_client_error() {
                assert!(answer["error"]["code"].is_string(), "{method} {path}: {answer}");
            }
        }
        // Without a token, every route that needs one says so.
        if route.auth {
            let (status, _) =
                call(&router, &method, &path_for(route.path, &doc, &user), None, route.body.map(|_| b"{}".as_slice()))
                    .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} without a token");
        }
    }
    // The description is the document utoipa would make: OpenAPI 3.1, every route listed.
    let (status, spec) = call(&router, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spec["openapi"], "3.1.0");
    for route in ROUTES {
        assert!(spec["paths"][route.path][route.method].is_object(), "{} {}", route.method, route.path);
    }
    // Pagination is bounded.
    for q in ["limit=0", "limit=101", "limit=x", "cursor=%%%", "cursor=bm9wZQ"] {
        let (status, _) = call(&router, "GET", &format!("/api/documents?{q}"), Some(&token), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
    }
    let (status, page) = call(&router, "GET", "/api/documents?limit=100", Some(&token), None).await;
    assert_eq!((status, page["documents"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    let _ = json!(null);
}

/// An index that ranks every document in a fixed order (no text: the access check is what
/// this tests).
struct Ranked(Vec<String>);

impl tandem_control::search::SearchIndex for Ranked {
    fn search(
        &self,
        _query: &str,
        only: Option<&[String]>,
        offset: usize,
        count: usize,
    ) -> Result<Vec<tandem_control::search::Hit>, String> {
        Ok(self
            .0
            .iter()
            .filter(|d| only.is_none_or(|o| o.contains(d)))
            .skip(offset)
            .take(count)
            .map(|d| tandem_control::search::Hit {
                doc: d.clone(),
                title: String::new(),
                score: 1.0,
                snippet: String::new(),
                highlights: Vec::new(),
            })
            .collect())
    }
}

#[tokio::test]
async fn search_for_a_reader_of_thousands_pages_through_only_readable_documents_in_rank_order() {
    let (_dir, router, app) = app().await;
    let signup = |email: &'static str| {
        let router = router.clone();
        async move {
            let body = format!(r#"{{"email":"{email}","password":"pw-long-enough","name":"N"}}"#);
            let (status, v) = call(&router, "POST", "/api/auth/signup", None, Some(body.as_bytes())).await;
            assert_eq!(status, StatusCode::CREATED);
            (v["access_token"].as_str().unwrap().to_owned(), v["user"]["id"].as_str().unwrap().to_owned())
        }
    };
    let (token, ada) = signup("ada@example.com").await;
    let (_, bob) = signup("bob@example.com").await;
    // Ada may read 4,200 documents (more than the API puts in the index's query, so it
    // checks ranked candidates against the access list); Bob owns 300 she may not read.
    let mut ranked = Vec::new();
    let mut hers = Vec::new();
    for i in 0..4_500 {
        let owner = if i % 15 == 7 { &bob } else { &ada };
        let doc = app.store.create_document(owner, &format!("d{i}")).await.unwrap().id;
        if owner == &ada {
            hers.push(doc.clone());
        }
        ranked.push(doc);
    }
    assert_eq!(hers.len(), 4_200);
    app.set_search(Arc::new(Ranked(ranked)));
    // Page by page, 50 at a time, for 30 pages: hers only, in rank order, none twice.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..30 {
        let path = match &cursor {
            Some(c) => format!("/api/search?q=x&limit=50&cursor={c}"),
            None => "/api/search?q=x&limit=50".to_owned(),
        };
        let (status, page) = call(&router, "GET", &path, Some(&token), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let ids: Vec<String> =
            page["results"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), 50);
        seen.extend(ids);
        cursor = Some(page["next_cursor"].as_str().expect("more pages").to_owned());
    }
    assert_eq!(seen, hers[..1_500]);
    // Twenty at a time, the default page: the same order.
    let (_, page) = call(&router, "GET", "/api/search?q=x", Some(&token), None).await;
    let ids: Vec<&str> = page["results"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids, hers[..20].iter().map(String::as_str).collect::<Vec<_>>());
}
