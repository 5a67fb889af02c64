//! The browser wrapper (`integration_tests::browser`) works: against a two-page site this test
//! serves itself on 127.0.0.1 (a form that POSTs, then a result page), a real headless Chromium
//! reads text, types, clicks, follows a redirect, sees an HttpOnly cookie, takes a screenshot, and
//! leaves no process behind.

use std::path::Path;
use std::time::{Duration, Instant};

use axum::Form;
use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::get;
use integration_tests::browser::{self, Browser};
use serde::Deserialize;

const FORM_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Confirm your purchase</title>
<style>body { font-family: sans-serif; margin: 3em; } .hidden { display: none; }</style></head>
<body>
  <h1>Team plan</h1>
  <p class="hidden">This text is hidden.</p>
  <form method="post" action="/activate">
    <label>Seats <input name="seats" value="1"></label>
    <button type="submit">Activate</button>
  </form>
</body></html>"#;

#[derive(Deserialize)]
struct Activation {
    seats: u32,
}

/// POST /activate sets an HttpOnly cookie and redirects (303) to the result page, which shows the
/// seats it was given in its query.
async fn activate(Form(activation): Form<Activation>) -> impl IntoResponse {
    (
        [(header::SET_COOKIE, "session=s3cr3t; Path=/; HttpOnly; SameSite=Lax")],
        Redirect::to(&format!("/done?seats={}", activation.seats)),
    )
}

async fn done(axum::extract::Query(activation): axum::extract::Query<Activation>) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Done</title></head>\
         <body style=\"font-family: sans-serif; margin: 3em\"><h1>Your subscription is active</h1>\
         <p>{} seats</p></body></html>",
        activation.seats
    ))
}

/// Serves the site on a free loopback port; returns its base URL.
async fn serve() -> String {
    let app = Router::new()
        .route("/", get(|| async { Html(FORM_PAGE) }))
        .route("/activate", axum::routing::post(activate))
        .route("/done", get(done));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let address = listener.local_addr().expect("the bound address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve the test site") });
    format!("http://{address}")
}

#[tokio::test]
async fn drives_a_form_to_its_result_page() {
    let site = serve().await;
    let started = Instant::now();
    let browser = Browser::start().await;
    let driver_pid = browser.driver_pid();
    let temp_dir = browser.temp_dir().to_string_lossy().into_owned();
    assert!(!browser::processes_mentioning(&temp_dir).is_empty(), "Chromium runs from {temp_dir}");
    eprintln!("browser started in {:?}", started.elapsed());

    browser.goto(&format!("{site}/")).await;
    let text = browser.text().await;
    assert!(text.contains("Team plan"), "{text}");
    assert!(!text.contains("This text is hidden"), "text() is the visible text only: {text}");
    assert!(browser.html().await.contains("This text is hidden"));

    browser.fill("input[name=seats]", "5").await;
    browser.click("button[type=submit]").await;
    browser.wait_for_text("Your subscription is active", Duration::from_secs(10)).await;
    assert!(browser.text().await.contains("5 seats"));

    let url = browser.current_url().await;
    assert_eq!((url.path(), url.query()), ("/done", Some("seats=5")), "{url}");

    let session = browser.cookie("session").await.expect("the server's session cookie");
    assert_eq!(session.value(), "s3cr3t");
    assert_eq!(session.http_only(), Some(true), "{session:?}");
    assert_eq!(browser.cookies().await.len(), 1);

    let shot = browser.screenshot("target/screenshots/browser-selftest.png").await;
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("cannot read {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", shot.display());
    assert!(png.len() > 1000, "{} is suspiciously small", shot.display());

    browser.close().await;
    assert!(!browser::process_running(driver_pid), "chromedriver ({driver_pid}) still runs");
    assert_eq!(browser::processes_mentioning(&temp_dir), Vec::<u32>::new(), "Chromium processes left");
    assert!(!Path::new(&temp_dir).exists(), "{temp_dir} was not deleted");
    eprintln!("whole browser test took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_wait_that_never_succeeds_fails_with_the_page_text_and_drop_cleans_up() {
    let site = serve().await;
    let browser = Browser::start().await;
    let driver_pid = browser.driver_pid();
    let temp_dir = browser.temp_dir().to_string_lossy().into_owned();
    browser.goto(&format!("{site}/")).await;

    // The panic is caught so that its message can be checked; the browser is then dropped unclosed.
    let outcome = tokio::spawn(async move {
        browser.wait_for_text("never shown", Duration::from_millis(300)).await;
    })
    .await;
    let panic = outcome.expect_err("wait_for_text must fail").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("did not show \"never shown\""), "{message}");
    assert!(message.contains("Team plan"), "the message carries the page text: {message}");
    assert!(message.contains(&site), "the message carries the URL: {message}");

    assert!(!browser::process_running(driver_pid), "chromedriver ({driver_pid}) still runs");
    assert_eq!(browser::processes_mentioning(&temp_dir), Vec::<u32>::new(), "Chromium processes left");
    assert!(!Path::new(&temp_dir).exists(), "{temp_dir} was not deleted");
}

#[tokio::test]
#[should_panic(expected = "run `scripts/test`")]
async fn a_missing_chromedriver_fails_and_says_how_to_get_it() {
    Browser::start_with(Path::new("/usr/bin/chromium"), Path::new("/nonexistent/chromedriver")).await;
}
