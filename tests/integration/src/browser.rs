//! A real browser for tests: headless Chromium driven through chromedriver (WebDriver), with
//! [`fantoccini`] as the client.
//!
//! Both come from Debian's packages `chromium` and `chromium-driver`: `scripts/test` installs them
//! when they are missing and exports their paths as `CHROMIUM` and `CHROMEDRIVER`. Outside it the
//! defaults `/usr/bin/chromium` and `/usr/bin/chromedriver` are used. A test that needs a browser
//! fails (never skips) when either is missing.
//!
//! ```no_run
//! # async fn landing(url: &str) {
//! use std::time::Duration;
//! use integration_tests::browser::Browser;
//!
//! let browser = Browser::start().await;
//! browser.goto(url).await;
//! assert!(browser.text().await.contains("Team plan"));
//! browser.click("button[type=submit]").await;
//! browser.wait_for_text("Your subscription is active", Duration::from_secs(10)).await;
//! assert!(browser.cookie("session").await.expect("session cookie").http_only().unwrap_or(false));
//! browser.screenshot("target/screenshots/landing.png").await;
//! browser.close().await;
//! # }
//! ```
//!
//! How it behaves:
//! - Every [`Browser`] has its own chromedriver, on a loopback port that chromedriver picks itself
//!   (`--port=0`, so parallel tests never race for a port), and its own fresh Chromium profile in a
//!   temporary folder. Chromium gets [`CHROMIUM_ARGS`]: headless, and no background connections
//!   (this machine's network refuses them, and they would slow every start).
//! - Methods panic with a message that says what was asked, the current URL and the page's visible
//!   text: they are test helpers, and the message is what the test log shows.
//! - Every wait is a poll every [`POLL_INTERVAL`] up to a deadline, never a fixed sleep. Each
//!   WebDriver command is bounded too: pages must load within [`PAGE_LOAD_TIMEOUT`].
//! - [`Browser::close`] ends the WebDriver session (chromedriver quits Chromium) and stops
//!   chromedriver. Dropping a `Browser` without closing it (a failed assertion, a panic) does the
//!   same synchronously, then kills chromedriver's whole process group and anything still running
//!   from the temporary folder, and deletes that folder: no process is left behind.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs};

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

pub use fantoccini::cookies::Cookie;
pub use url::Url;

/// The variable naming the Chromium binary (`scripts/test` sets it).
pub const CHROMIUM_VARIABLE: &str = "CHROMIUM";
/// The variable naming the chromedriver binary (`scripts/test` sets it).
pub const CHROMEDRIVER_VARIABLE: &str = "CHROMEDRIVER";
/// Where Debian's `chromium` package puts the browser.
pub const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts chromedriver.
pub const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Chromium's flags, besides the fresh `--user-data-dir` each browser gets. Without the ones that
/// turn off background networking, Chromium keeps trying hosts this machine cannot reach.
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    // A fixed viewport, so screenshots look the same everywhere.
    "--window-size=1280,900",
];

/// How often waits poll.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long chromedriver may take to listen.
pub const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long Chromium may take to start (a new WebDriver session).
pub const SESSION_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a page may take to load (`goto`, and a navigation a click starts).
pub const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `click` and `fill` wait for their element to appear.
pub const ELEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long closing may take (chromedriver quitting Chromium).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A headless Chromium and the chromedriver driving it. See the [module docs](self).
pub struct Browser {
    client: Client,
    // Declared after `client`: dropped (so stopped) last.
    driver: Driver,
}

impl Browser {
    /// Starts chromedriver and, through it, a headless Chromium with a fresh profile: the binaries
    /// from `CHROMIUM` / `CHROMEDRIVER`, or Debian's default paths. Panics if either is missing or
    /// does not start in time, with chromedriver's log in the message.
    pub async fn start() -> Browser {
        let chromium = binary(CHROMIUM_VARIABLE, DEFAULT_CHROMIUM);
        let chromedriver = binary(CHROMEDRIVER_VARIABLE, DEFAULT_CHROMEDRIVER);
        Browser::start_with(&chromium, &chromedriver).await
    }

    /// [`Browser::start`] with explicit binaries.
    pub async fn start_with(chromium: &Path, chromedriver: &Path) -> Browser {
        require_executable(chromium, "Chromium", CHROMIUM_VARIABLE, "chromium");
        require_executable(chromedriver, "chromedriver", CHROMEDRIVER_VARIABLE, "chromium-driver");

        let mut driver = Driver::spawn(chromedriver);
        driver.wait_until_listening().await;

        let profile = driver.dir.join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|arg| arg.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities: Capabilities = match json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }) {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        };

        // Our crates enable both of rustls's providers, so it cannot pick one by itself.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = ClientBuilder::rustls()
            .unwrap_or_else(|e| panic!("cannot set up the WebDriver client (TLS roots): {e}"));
        builder.capabilities(capabilities);
        let client = match tokio::time::timeout(SESSION_START_TIMEOUT, builder.connect(&driver.url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "chromedriver could not start Chromium ({}): {e}\n{}",
                chromium.display(),
                driver.log_tail()
            ),
            Err(_) => panic!(
                "Chromium ({}) did not start within {SESSION_START_TIMEOUT:?}\n{}",
                chromium.display(),
                driver.log_tail()
            ),
        };
        driver.session = client.session_id().await.ok().flatten();

        let browser = Browser { client, driver };
        let timeouts = TimeoutConfiguration::new(
            Some(PAGE_LOAD_TIMEOUT),
            Some(PAGE_LOAD_TIMEOUT),
            // No implicit wait: finding an element answers at once, waits are our own polls.
            Some(Duration::ZERO),
        );
        if let Err(e) = browser.client.update_timeouts(timeouts).await {
            panic!("cannot set the WebDriver timeouts: {e}\n{}", browser.driver.log_tail());
        }
        browser
    }

    /// Opens `url` and waits until the page has loaded (at most [`PAGE_LOAD_TIMEOUT`]).
    pub async fn goto(&self, url: &str) {
        if let Err(e) = self.client.goto(url).await {
            panic!("cannot open {url}: {e}\n{}", self.describe().await);
        }
    }

    /// The URL of the page shown now (after redirects).
    pub async fn current_url(&self) -> Url {
        match self.client.current_url().await {
            Ok(url) => url,
            Err(e) => panic!("cannot read the current URL: {e}"),
        }
    }

    /// The page's visible text, as rendered (hidden elements left out), like a user would read it.
    pub async fn text(&self) -> String {
        match self.try_text().await {
            Ok(text) => text,
            Err(e) => panic!("cannot read the page's text: {e}\n{}", self.describe().await),
        }
    }

    /// The page's HTML as the browser holds it now (its DOM, serialized).
    pub async fn html(&self) -> String {
        match self.client.source().await {
            Ok(html) => html,
            Err(e) => panic!("cannot read the page's HTML: {e}\n{}", self.describe().await),
        }
    }

    /// Clicks the element matching the CSS `selector`, waiting up to [`ELEMENT_TIMEOUT`] for it.
    /// A click that starts a navigation does not wait for the new page: follow it with
    /// [`Browser::wait_for_text`] (or [`Browser::wait_for`]).
    pub async fn click(&self, selector: &str) {
        let element = self.wait_for(selector, ELEMENT_TIMEOUT).await;
        if let Err(e) = element.click().await {
            panic!("cannot click {selector:?}: {e}\n{}", self.describe().await);
        }
    }

    /// Replaces the value of the input matching the CSS `selector` by typing `value`, waiting up to
    /// [`ELEMENT_TIMEOUT`] for the input.
    pub async fn fill(&self, selector: &str, value: &str) {
        let element = self.wait_for(selector, ELEMENT_TIMEOUT).await;
        if let Err(e) = async {
            element.clear().await?;
            element.send_keys(value).await
        }
        .await
        {
            panic!("cannot type into {selector:?}: {e}\n{}", self.describe().await);
        }
    }

    /// Waits until an element matches the CSS `selector`, polling for at most `timeout`, and
    /// returns it (a [`fantoccini`] element, for anything this wrapper does not cover).
    pub async fn wait_for(&self, selector: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        let mut last_error: String;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining.max(POLL_INTERVAL), self.client.find(Locator::Css(selector)))
                .await
            {
                Ok(Ok(element)) => return element,
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "the WebDriver command did not answer in time".into(),
            }
            if Instant::now() >= deadline {
                panic!(
                    "no element matches {selector:?} after {timeout:?} (last error: {last_error})\n{}",
                    self.describe().await
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until the page's visible text contains `needle`, polling for at most `timeout`.
    /// Panics with the page's URL and text if it never does.
    pub async fn wait_for_text(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last_error: Option<String>;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining.max(POLL_INTERVAL), self.try_text()).await {
                Ok(Ok(text)) if text.contains(needle) => return,
                Ok(Ok(_)) => last_error = None,
                // Between two pages the body may be gone or stale: try again.
                Ok(Err(e)) => last_error = Some(e.to_string()),
                Err(_) => last_error = Some("the WebDriver command did not answer in time".into()),
            }
            if Instant::now() >= deadline {
                let last_error = last_error.map(|e| format!(" (last error: {e})")).unwrap_or_default();
                panic!(
                    "the page did not show {needle:?} within {timeout:?}{last_error}\n{}",
                    self.describe().await
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Every cookie the browser holds for the current page, `HttpOnly` ones included (WebDriver
    /// sees them, page scripts do not): check `cookie.http_only()`, `cookie.secure()`,
    /// `cookie.same_site()`.
    pub async fn cookies(&self) -> Vec<Cookie<'static>> {
        match self.client.get_all_cookies().await {
            Ok(cookies) => cookies,
            Err(e) => panic!("cannot read the cookies: {e}\n{}", self.describe().await),
        }
    }

    /// The cookie called `name` for the current page, if the browser holds one.
    pub async fn cookie(&self, name: &str) -> Option<Cookie<'static>> {
        self.cookies().await.into_iter().find(|cookie| cookie.name() == name)
    }

    /// Saves a PNG of the viewport to `path`, creating its folders, and returns the absolute path
    /// written. A relative path is taken from the workspace root, so `target/screenshots/x.png`
    /// lands in the workspace's (git-ignored) `target/` whatever the test's working folder.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = workspace_root().join(path.as_ref());
        let png = match self.client.screenshot().await {
            Ok(png) => png,
            Err(e) => panic!("cannot take a screenshot: {e}\n{}", self.describe().await),
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        fs::write(&path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// The underlying [`fantoccini`] client, for anything this wrapper does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// chromedriver's process id. Chromium runs as its child, in its process group.
    pub fn driver_pid(&self) -> u32 {
        self.driver.pid
    }

    /// The temporary folder holding this browser's profile and chromedriver's log; deleted on
    /// close. Every Chromium process of this browser names it on its command line.
    pub fn temp_dir(&self) -> &Path {
        &self.driver.dir
    }

    /// Ends the session (chromedriver quits Chromium), stops chromedriver and deletes the profile.
    /// Dropping the browser does the same; closing is the orderly way, and returns once done.
    pub async fn close(self) {
        let Browser { client, mut driver } = self;
        if let Ok(Ok(())) = tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await {
            // The session is gone already: no need to end it again when stopping.
            driver.session = None;
        }
        driver.stop();
    }

    async fn try_text(&self) -> Result<String, CmdError> {
        self.client.find(Locator::Css("body")).await?.text().await
    }

    /// "at URL, page text: ..." for failure messages, each read bounded so that a hung page still
    /// lets the failure be reported.
    async fn describe(&self) -> String {
        let bound = Duration::from_secs(3);
        let url = match tokio::time::timeout(bound, self.client.current_url()).await {
            Ok(Ok(url)) => url.to_string(),
            Ok(Err(e)) => format!("(unknown: {e})"),
            Err(_) => "(unknown: no answer)".into(),
        };
        let text = match tokio::time::timeout(bound, self.try_text()).await {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => format!("(unreadable: {e})"),
            Err(_) => "(unreadable: no answer)".into(),
        };
        format!("current URL: {url}\npage text:\n-----\n{text}\n-----")
    }
}

/// The chromedriver process, its temporary folder and, once created, the WebDriver session.
/// Dropping it stops everything (see [`Driver::stop`]), also when `Browser::start` fails halfway.
struct Driver {
    child: Child,
    pid: u32,
    dir: PathBuf,
    log: PathBuf,
    /// `http://127.0.0.1:PORT/`, once chromedriver listens.
    url: String,
    port: u16,
    session: Option<String>,
    stopped: bool,
}

impl Driver {
    fn spawn(chromedriver: &Path) -> Driver {
        let dir = env::temp_dir().join(format!("browser-test-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let log = dir.join("chromedriver.log");
        let out = fs::File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("cannot share {}: {e}", log.display()));

        let mut command = Command::new(chromedriver);
        // --port=0: chromedriver takes a free port and tells which in its log (read below).
        command.arg("--port=0").stdin(Stdio::null()).stdout(out).stderr(err);
        // Chromium keeps its crash reports (and dconf its cache) under these, not the profile:
        // inside the temporary folder they leave nothing in the home folder, and its crash
        // handler, which leaves the process group, names the folder too (see `stop`).
        command.env("XDG_CONFIG_HOME", dir.join("config")).env("XDG_CACHE_HOME", dir.join("cache"));
        // Its own process group, holding Chromium too, so that all of it can be killed at once.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().unwrap_or_else(|e| {
            let _ = fs::remove_dir_all(&dir);
            panic!("cannot run {}: {e}", chromedriver.display())
        });
        let pid = child.id();
        Driver { child, pid, dir, log, url: String::new(), port: 0, session: None, stopped: false }
    }

    /// Polls chromedriver's log for "ChromeDriver was started successfully on port N." (written
    /// once it listens) for at most [`DRIVER_START_TIMEOUT`].
    async fn wait_until_listening(&mut self) {
        const STARTED: &str = "started successfully on port ";
        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        loop {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(at) = log.find(STARTED) {
                let digits: String =
                    log[at + STARTED.len()..].chars().take_while(char::is_ascii_digit).collect();
                match digits.parse::<u16>() {
                    Ok(port) if port > 0 => {
                        self.port = port;
                        self.url = format!("http://127.0.0.1:{port}/");
                        return;
                    }
                    _ => panic!("cannot read chromedriver's port from its log\n{}", self.log_tail()),
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromedriver exited during startup ({status})\n{}", self.log_tail());
            }
            if Instant::now() >= deadline {
                panic!("chromedriver did not start within {DRIVER_START_TIMEOUT:?}\n{}", self.log_tail());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The end of chromedriver's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(cannot read it: {e})"));
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("chromedriver's log ({}):\n-----\n{tail}\n-----", self.log.display())
    }

    /// Stops everything, synchronously (it runs in `Drop`): ends the WebDriver session if still
    /// open (chromedriver then quits Chromium in order), kills chromedriver's process group (which
    /// holds Chromium's processes), reaps chromedriver, kills any process still naming the
    /// temporary folder on its command line (Chromium's crash handler runs in a session of its own;
    /// it also exits by itself once Chromium is gone) and deletes the folder. Safe to call twice.
    ///
    /// Chromium's processes, orphaned when chromedriver dies, are reaped by the machine's init
    /// process, not by us: until it does they show in `ps` as `<defunct>`, exited and harmless.
    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Some(session) = self.session.take() {
            let _ = delete_session(self.port, &session);
        }
        signal::kill_group(self.pid);
        let _ = self.child.wait();
        // Chromium's processes named the folder (--user-data-dir) on their command lines.
        let marker = self.dir.to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let strays = processes_mentioning(&marker);
            if strays.is_empty() || Instant::now() >= deadline {
                break;
            }
            strays.into_iter().for_each(signal::kill_process);
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `DELETE /session/ID` over a plain blocking connection, as `Drop` cannot await. chromedriver
/// answers once Chromium has quit.
fn delete_session(port: u16, session: &str) -> std::io::Result<()> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(CLOSE_TIMEOUT))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // Read the whole answer, but do not wait for chromedriver to close the connection: it keeps
    // it open despite `Connection: close`.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(());
        }
        answer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return Ok(());
            }
        }
    }
}

/// The ids of the running processes (other than this one) whose command line contains `marker`.
pub fn processes_mentioning(marker: &str) -> Vec<u32> {
    let own = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

/// Whether a process with this id is running (a zombie, exited but not yet reaped, is not).
pub fn process_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, the state follows the last ')'.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

mod signal {
    //! SIGKILL through libc's `kill(2)` (std has no process-group kill).

    const SIGKILL: i32 = 9;

    unsafe extern "C" {
        // Sending a signal touches no memory of ours: safe to call.
        safe fn kill(pid: i32, signal: i32) -> i32;
    }

    /// Kills every process of the group `pgid` (a process group is named by its leader's id).
    pub(super) fn kill_group(pgid: u32) {
        if let Ok(pgid) = i32::try_from(pgid)
            && pgid > 1
        {
            kill(-pgid, SIGKILL);
        }
    }

    pub(super) fn kill_process(pid: u32) {
        if let Ok(pid) = i32::try_from(pid)
            && pid > 1
        {
            kill(pid, SIGKILL);
        }
    }
}

/// The path in `variable`, or `default` when it is unset or empty.
fn binary(variable: &str, default: &str) -> PathBuf {
    match env::var_os(variable) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(default),
    }
}

fn require_executable(path: &Path, what: &str, variable: &str, package: &str) {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0);
    if !executable {
        panic!(
            "{what} not found at {} (from {variable}, else {}): run `scripts/test`, which installs the \
             Debian package `{package}` and sets {variable}",
            path.display(),
            if variable == CHROMIUM_VARIABLE { DEFAULT_CHROMIUM } else { DEFAULT_CHROMEDRIVER },
        );
    }
}

/// The workspace root (this crate is `tests/integration`).
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().and_then(Path::parent).unwrap_or(manifest_dir).to_path_buf()
}
