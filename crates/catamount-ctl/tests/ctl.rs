//! catamountctl end to end, without Ruby: command lines against a tiny control server on
//! loopback (TCP, a UNIX socket file, an abstract name) and signals to child processes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use catamount_ctl::{run, ConfigValues, Host, Outcome, Timeouts};
use socket2::SockRef;

/// Records what catamountctl prints and which config files it asks for.
#[derive(Default)]
struct Fake {
    out: String,
    vars: HashMap<String, String>,
    config: Option<Result<ConfigValues, String>>,
    config_reads: Vec<(String, String)>,
    timeouts: Option<Timeouts>,
}

impl Host for Fake {
    fn print(&mut self, text: &str) {
        self.out.push_str(text);
    }

    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn read_config(&mut self, path: &str, environment: &str) -> Result<ConfigValues, String> {
        self.config_reads.push((path.into(), environment.into()));
        self.config
            .clone()
            .unwrap_or_else(|| Ok(ConfigValues::default()))
    }

    fn timeouts(&self) -> Timeouts {
        self.timeouts.unwrap_or_default()
    }
}

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

/// Runs `line` (with `-F -` first, so no config file of the working directory is read).
fn ctl(line: &str) -> (Outcome, String) {
    let mut fake = Fake::default();
    let outcome = run(&args(&format!("-F - {line}")), &mut fake);
    (outcome, fake.out)
}

/// `line` exits 1 after printing `message`.
fn assert_fails(line: &str, message: &str) {
    assert_eq!(ctl(line), (exit(1), format!("{message}\n")), "{line}");
}

fn exit(code: i32) -> Outcome {
    Outcome::Exit(code)
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("catamount-ctl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

// ---- the control server's path ----

/// What the test's control server does with its one connection.
#[derive(Clone)]
enum Reply {
    /// Reads the request, writes these bytes, closes.
    Bytes(Vec<u8>),
    /// Reads the request, says nothing, holds the connection for a while.
    Silent,
}

fn answer(code: &str, body: &str) -> Reply {
    Reply::Bytes(
        format!(
            "HTTP/1.1 {code}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// Serves one connection on `stream`; sends the request head it read on `tx`.
fn serve_one<S: Read + Write>(mut stream: S, reply: Reply, tx: &mpsc::Sender<String>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
    match reply {
        Reply::Bytes(bytes) => {
            let _ = stream.write_all(&bytes);
        }
        Reply::Silent => thread::sleep(Duration::from_secs(3)),
    }
}

/// Serves, on a thread, the one connection `accept` gives; the request comes on the receiver.
fn serve<S, A>(accept: A, reply: Reply) -> mpsc::Receiver<String>
where
    S: Read + Write + AsFd,
    A: FnOnce() -> Option<S> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Some(stream) = accept() else { return };
        if SockRef::from(&stream)
            .set_read_timeout(Some(Duration::from_secs(10)))
            .is_ok()
        {
            serve_one(stream, reply, &tx);
        }
    });
    rx
}

/// A control server on 127.0.0.1 (a free port) for one connection: its URL and, later, the
/// request it got.
fn tcp_server(reply: Reply) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let accept = move || listener.accept().ok().map(|(stream, _)| stream);
    (format!("tcp://127.0.0.1:{port}"), serve(accept, reply))
}

fn unix_server(listener: UnixListener, reply: Reply) -> mpsc::Receiver<String> {
    serve(
        move || listener.accept().ok().map(|(stream, _)| stream),
        reply,
    )
}

fn request(rx: &mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the control server got no request: {e}"))
}

#[test]
fn printable_commands_print_the_body_after_the_success_line() {
    for command in ["stats", "gc-stats", "thread-backtraces"] {
        let body = r#"{"backlog":0,"running":5}"#;
        let (url, rx) = tcp_server(answer("200 OK", body));
        let (outcome, out) = ctl(&format!("-C {url} -T s3cret {command}"));
        assert_eq!(outcome, exit(0), "{command}: {out}");
        assert_eq!(out, format!("Command {command} sent success\n{body}\n"));
        assert_eq!(
            request(&rx),
            format!("GET /{command}?token=s3cret HTTP/1.0\r\n\r\n")
        );
    }
}

#[test]
fn action_commands_print_only_the_success_line_and_send_no_token_without_one() {
    for command in [
        "stop",
        "halt",
        "restart",
        "phased-restart",
        "refork",
        "reload-worker-directory",
        "gc",
    ] {
        let (url, rx) = tcp_server(answer("200 OK", r#"{ "status": "ok" }"#));
        let (outcome, out) = ctl(&format!("-C {url} {command}"));
        assert_eq!(outcome, exit(0), "{command}: {out}");
        assert_eq!(out, format!("Command {command} sent success\n"));
        assert_eq!(request(&rx), format!("GET /{command} HTTP/1.0\r\n\r\n"));
    }
}

#[test]
fn refusals_and_odd_answers_are_pumactls_messages_and_exit_1() {
    for (reply, message) in [
        (
            answer("403 Forbidden", "Invalid auth token"),
            "Unauthorized access to server (wrong auth token)",
        ),
        (
            answer("404 Not Found", "Unsupported action"),
            "Command error: Unsupported action",
        ),
        (
            answer("404 Not Found", "Command \"halt\" unavailable"),
            "Command error: Command \"halt\" unavailable",
        ),
        (
            answer("500 Internal Server Error", "oops"),
            "Bad response from server: 500",
        ),
        (Reply::Bytes(Vec::new()), "Server sent empty response"),
        (
            Reply::Bytes(b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{\"ba".to_vec()),
            "Server closed connection before responding",
        ),
    ] {
        let (url, rx) = tcp_server(reply.clone());
        let (outcome, out) = ctl(&format!("-C {url} -T t stats"));
        assert_eq!(outcome, exit(1), "{message}");
        assert_eq!(out, format!("{message}\n"));
        request(&rx);
        // -Q: the same status, nothing printed.
        let (url, rx) = tcp_server(reply);
        assert_eq!(
            ctl(&format!("-Q -C {url} -T t stats")),
            (exit(1), String::new())
        );
        request(&rx);
    }
}

#[test]
fn a_silent_server_is_given_up_on_in_bounded_time() {
    let (url, rx) = tcp_server(Reply::Silent);
    let mut fake = Fake {
        timeouts: Some(Timeouts {
            connect: Duration::from_secs(5),
            answer: Duration::from_millis(300),
        }),
        ..Fake::default()
    };
    let outcome = run(&args(&format!("-F - -C {url} stats")), &mut fake);
    assert_eq!(outcome, exit(1));
    assert_eq!(fake.out, "No answer from the control server within 0.3 s\n");
    request(&rx);
}

#[test]
fn unix_socket_files_and_abstract_names() {
    let dir = tempdir("unix");
    let path = dir.join("control.sock");
    let listener = UnixListener::bind(&path).unwrap_or_else(|e| panic!("{e}"));
    let rx = unix_server(listener, answer("200 OK", "{}"));
    let (outcome, out) = ctl(&format!("-C unix://{} -T x stats", path.display()));
    assert_eq!(
        (outcome, out.as_str()),
        (exit(0), "Command stats sent success\n{}\n")
    );
    assert_eq!(request(&rx), "GET /stats?token=x HTTP/1.0\r\n\r\n");

    let name = format!("catamount-ctl-test-{}", std::process::id());
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let listener = UnixListener::bind_addr(&addr).unwrap_or_else(|e| panic!("{e}"));
    let rx = unix_server(listener, answer("200 OK", r#"{ "status": "ok" }"#));
    let (outcome, out) = ctl(&format!("-C unix://@{name} stop"));
    assert_eq!(
        (outcome, out.as_str()),
        (exit(0), "Command stop sent success\n")
    );
    assert_eq!(request(&rx), "GET /stop HTTP/1.0\r\n\r\n");

    // Nothing there: Ruby's words.
    let gone = dir.join("gone.sock");
    assert_eq!(
        ctl(&format!("-C unix://{} stop", gone.display())),
        (
            exit(1),
            format!(
                "No such file or directory - connect(2) for {}\n",
                gone.display()
            )
        )
    );
    assert_fails(
        &format!("-C unix://@{name}-none stop"),
        &format!("Connection refused - connect(2) for \\0{name}-none"),
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn status_by_url_only_connects() {
    let (url, rx) = tcp_server(Reply::Bytes(Vec::new()));
    assert_eq!(
        ctl(&format!("-C {url} status")),
        (exit(0), "Puma is started\n".into())
    );
    assert_eq!(request(&rx), "", "nothing was sent");
    let (url, rx) = tcp_server(Reply::Bytes(Vec::new()));
    assert_eq!(
        ctl(&format!("-Q -C {url} status")),
        (exit(0), String::new())
    );
    request(&rx);
    // A port nothing listens on.
    let free = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = free.local_addr().map(|a| a.port()).unwrap_or(0);
    drop(free);
    assert_fails(
        &format!("-C tcp://127.0.0.1:{port} status"),
        &format!("Connection refused - connect(2) for \"127.0.0.1\" port {port}"),
    );
}

#[test]
fn bad_urls() {
    assert_fails("-C foo://x stop", "Invalid scheme: foo");
    assert_fails(
        "-C 127.0.0.1:1 stop",
        "bad URI(is not URI?): \"127.0.0.1:1\"",
    );
}

// ---- the pid's path ----

/// A shell that reports the signals it traps; ready once it has installed the traps.
struct Trapper {
    child: Child,
    /// The shell's `sleep`, ended with it.
    sleeper: i32,
    lines: BufReader<std::process::ChildStdout>,
}

impl Trapper {
    fn trapping(signals: &[&str]) -> Trapper {
        let traps: String = signals
            .iter()
            .map(|s| format!("trap 'echo got {s}; kill $! 2>/dev/null; exit 0' {s}\n"))
            .collect();
        let script = format!("{traps}sleep 30 &\necho ready $!\nwait $!\n");
        // A shell cannot trap a signal ignored when it started (POSIX), and a run under
        // `nohup` ignores HUP: `env --default-signal` gives the shell the default dispositions.
        let mut child = Command::new("env")
            .args(["--default-signal", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut me = Trapper {
            child,
            sleeper: 0,
            lines: BufReader::new(stdout),
        };
        let ready = me.next_line();
        me.sleeper = ready
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{ready:?}"));
        me
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn next_line(&mut self) -> String {
        let mut line = String::new();
        let _ = self.lines.read_line(&mut line);
        line.trim_end().to_string()
    }

    /// Waits (bounded: the shell's `sleep`) for its end.
    fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Kills the shell (and its `sleep`); returns how the shell ended.
    fn kill(mut self) -> std::process::ExitStatus {
        let _ = self.child.kill();
        self.child.wait().unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Trapper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.sleeper > 0 {
            let _ = Command::new("kill").arg(self.sleeper.to_string()).status();
        }
    }
}

#[test]
fn signal_commands_reach_the_pid() {
    for (command, signal) in [
        ("stop", "TERM"),
        ("halt", "QUIT"),
        ("restart", "USR2"),
        ("phased-restart", "USR1"),
        ("refork", "URG"),
        ("reopen-log", "HUP"),
        ("info", "PWR"),
        ("worker-count-up", "TTIN"),
        ("worker-count-down", "TTOU"),
    ] {
        let mut child = Trapper::trapping(&[signal]);
        let (outcome, out) = ctl(&format!("-p {} {command}", child.pid()));
        assert_eq!(outcome, exit(0), "{command}: {out}");
        assert_eq!(out, format!("Command {command} sent success\n"));
        assert_eq!(child.next_line(), format!("got {signal}"), "{command}");
        assert!(child.wait().success());
    }
}

#[test]
fn signal_only_commands_use_the_pid_even_with_a_control_url() {
    let mut child = Trapper::trapping(&["HUP"]);
    let (outcome, _) = ctl(&format!(
        "-C tcp://127.0.0.1:1 -p {} reopen-log",
        child.pid()
    ));
    assert_eq!(outcome, exit(0));
    assert_eq!(child.next_line(), "got HUP");
}

#[test]
fn status_by_pid() {
    let child = Trapper::trapping(&[]);
    let pid = child.pid();
    assert_eq!(
        ctl(&format!("-p {pid} status")),
        (exit(0), "Puma is started\n".into())
    );
    // Said even with -Q, as pumactl does.
    assert_eq!(
        ctl(&format!("-Q -p {pid} status")),
        (exit(0), "Puma is started\n".into())
    );
    assert_eq!(child.kill().signal(), Some(9));
    assert_fails(&format!("-p {pid} status"), "Puma is not running");
    assert_eq!(
        ctl(&format!("-Q -p {pid} status")),
        (exit(1), String::new())
    );
    assert_fails(&format!("-p {pid} stop"), &format!("No pid '{pid}' found"));
}

#[test]
fn process_groups_are_never_signalled() {
    // pumactl would signal its own process group for these.
    assert_fails("-p abc stop", "No pid '0' found");
    assert_fails("-p -5 halt", "No pid '-5' found");
    assert_fails("-p 0 status", "Puma is not running");
    let dir = tempdir("empty-pidfile");
    let pidfile = dir.join("pid");
    std::fs::write(&pidfile, "").unwrap_or_else(|e| panic!("{e}"));
    assert_fails(
        &format!("-P {} stop", pidfile.display()),
        "No pid '0' found",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pidfile_and_state_file() {
    let dir = tempdir("files");
    let mut child = Trapper::trapping(&["TERM"]);
    let pidfile = dir.join("server.pid");
    std::fs::write(&pidfile, format!("{}\n", child.pid())).unwrap_or_else(|e| panic!("{e}"));
    // The pidfile wins over -p, as in pumactl.
    let (outcome, _) = ctl(&format!("-p 1 -P {} stop", pidfile.display()));
    assert_eq!(outcome, exit(0));
    assert_eq!(child.next_line(), "got TERM");

    let mut child = Trapper::trapping(&["USR1"]);
    let state = dir.join("puma.state");
    std::fs::write(
        &state,
        format!(
            "---\npid: {}\nrunning_from: \"{}\"\n",
            child.pid(),
            dir.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The state file's (absent) control URL replaces -C.
    let (outcome, out) = ctl(&format!(
        "-C tcp://127.0.0.1:1 -S {} phased-restart",
        state.display()
    ));
    assert_eq!(outcome, exit(0), "{out}");
    assert_eq!(child.next_line(), "got USR1");

    let (url, rx) = tcp_server(answer("200 OK", "{}"));
    std::fs::write(
        &state,
        format!("---\npid: 1\ncontrol_url: {url}\ncontrol_auth_token: fromstate\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (outcome, _) = ctl(&format!("-T fromflag -S {} stats", state.display()));
    assert_eq!(outcome, exit(0));
    assert_eq!(request(&rx), "GET /stats?token=fromstate HTTP/1.0\r\n\r\n");

    let missing = dir.join("missing");
    assert_eq!(
        ctl(&format!("-S {} stop", missing.display())),
        (
            exit(1),
            format!("State file not found: {}\n", missing.display())
        )
    );
    assert_eq!(
        ctl(&format!("-P {} stop", missing.display())),
        (
            exit(1),
            format!(
                "No such file or directory @ rb_sysopen - {}\n",
                missing.display()
            )
        )
    );
    assert_eq!(
        ctl(&format!("-Q -S {} stop", missing.display())),
        (exit(1), String::new())
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn http_only_commands_without_a_url() {
    for command in [
        "stats",
        "gc",
        "gc-stats",
        "thread-backtraces",
        "reload-worker-directory",
    ] {
        // pumactl says it on stdout even with -Q, and exits 0.
        assert_eq!(
            ctl(&format!("-Q -p 1 {command}")),
            (exit(0), format!("'{command}' not available via pid only\n"))
        );
    }
    assert_fails("stats", "Neither pid nor control url available");
    assert_fails(
        "-C tcp://127.0.0.1:1 info",
        "Neither pid nor control url available",
    );
}

#[test]
fn command_line_mistakes_are_printed_even_with_quiet() {
    assert_eq!(
        ctl("-Q"),
        (
            exit(1),
            "Available commands: gc, gc-stats, halt, info, phased-restart, refork, \
             reload-worker-directory, reopen-log, restart, start, stats, status, stop, \
             thread-backtraces, worker-count-down, worker-count-up\n"
                .into()
        )
    );
    assert_fails("-Q bogus", "Invalid command: bogus");
    assert_fails("-Q -x stop", "invalid option: -x");
    let (outcome, out) = ctl("-H");
    assert_eq!(outcome, exit(0));
    assert!(out.starts_with("Usage: catamountctl "), "{out}");
    assert_eq!(
        ctl("-V"),
        (exit(0), format!("{}\n", env!("CARGO_PKG_VERSION")))
    );
}

// ---- start, and a restart with nothing to restart ----

#[test]
fn start_hands_back_the_servers_command_line() {
    let mut fake = Fake::default();
    let outcome = run(
        &args("-S st -Q -P pf -C tcp://127.0.0.1:9293 -T tok -F - -e production start"),
        &mut fake,
    );
    assert_eq!(
        outcome,
        Outcome::Start(args(
            "-S st -q --pidfile pf --control-url tcp://127.0.0.1:9293 --control-token tok -C - -e production"
        ))
    );
    assert_eq!(fake.out, "");
    // The control server as the config file or a state file says it is not repeated: the
    // server reads the file itself.
    let dir = tempdir("start");
    let config = dir.join("puma.rb");
    std::fs::write(&config, "").unwrap_or_else(|e| panic!("{e}"));
    let state = dir.join("state");
    std::fs::write(
        &state,
        "pid: 1\ncontrol_url: tcp://127.0.0.1:1\ncontrol_auth_token: st\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut fake = Fake {
        config: Some(Ok(ConfigValues {
            state: Some(state.display().to_string()),
            control_url: Some("unix:///tmp/c.sock".into()),
            control_auth_token: Some("fromconfig".into()),
            pidfile: Some("pf".into()),
        })),
        ..Fake::default()
    };
    let outcome = run(&args(&format!("-F {} start", config.display())), &mut fake);
    let want = format!(
        "-S {} --pidfile pf -C {}",
        state.display(),
        config.display()
    );
    assert_eq!(outcome, Outcome::Start(args(&want)));
    let _ = std::fs::remove_dir_all(dir);
    // The environment comes from APP_ENV / RACK_ENV / RAILS_ENV when -e is not given.
    let mut fake = Fake::default();
    fake.vars.insert("RACK_ENV".into(), "staging".into());
    assert_eq!(
        run(&args("-F - start"), &mut fake),
        Outcome::Start(args("-C - -e staging"))
    );
}

#[test]
fn restart_of_a_process_that_is_gone_starts_the_server() {
    let child = Trapper::trapping(&[]);
    let pid = child.pid();
    child.kill();
    let (outcome, out) = ctl(&format!("-p {pid} -P /nonexistent/x restart"));
    // The pidfile is read first (and fails).
    assert_eq!(outcome, exit(1), "{out}");
    let (outcome, out) = ctl(&format!("-p {pid} restart"));
    assert_eq!(outcome, Outcome::Start(args("-C -")));
    assert_eq!(out, "");
}

// ---- the config file ----

#[test]
fn the_config_file_fills_in_what_the_flags_do_not_say() {
    let dir = tempdir("config");
    let config = dir.join("puma.rb");
    std::fs::write(&config, "# read by the host\n").unwrap_or_else(|e| panic!("{e}"));
    let (url, rx) = tcp_server(answer("200 OK", "{}"));
    let mut fake = Fake {
        config: Some(Ok(ConfigValues {
            state: None,
            control_url: Some(url),
            control_auth_token: Some("fromconfig".into()),
            pidfile: None,
        })),
        ..Fake::default()
    };
    let outcome = run(
        &args(&format!("-F {} -e prod stats", config.display())),
        &mut fake,
    );
    assert_eq!(outcome, exit(0), "{}", fake.out);
    assert_eq!(
        fake.config_reads,
        [(config.display().to_string(), "prod".into())]
    );
    assert_eq!(request(&rx), "GET /stats?token=fromconfig HTTP/1.0\r\n\r\n");

    // A flag wins over the file; `auto` in the file is no address; the file's pidfile is used.
    let mut child = Trapper::trapping(&["TERM"]);
    let pidfile = dir.join("pid");
    std::fs::write(&pidfile, child.pid().to_string()).unwrap_or_else(|e| panic!("{e}"));
    let mut fake = Fake {
        config: Some(Ok(ConfigValues {
            state: None,
            control_url: Some("auto".into()),
            control_auth_token: None,
            pidfile: Some(pidfile.display().to_string()),
        })),
        ..Fake::default()
    };
    let outcome = run(&args(&format!("-F {} stop", config.display())), &mut fake);
    assert_eq!(outcome, exit(0), "{}", fake.out);
    assert_eq!(fake.config_reads[0].1, "development");
    assert_eq!(child.next_line(), "got TERM");

    // Its errors are printed even with -Q.
    let mut fake = Fake {
        config: Some(Err(
            "config/puma.rb:3: unknown configuration method nope".into()
        )),
        ..Fake::default()
    };
    let outcome = run(
        &args(&format!("-Q -F {} stop", config.display())),
        &mut fake,
    );
    assert_eq!(outcome, exit(1));
    assert_eq!(
        fake.out,
        "config/puma.rb:3: unknown configuration method nope\n"
    );

    let missing = dir.join("missing.rb");
    let mut fake = Fake::default();
    let outcome = run(&args(&format!("-F {} stop", missing.display())), &mut fake);
    assert_eq!(outcome, exit(1));
    assert_eq!(
        fake.out,
        format!(
            "No such file or directory @ rb_sysopen - {}\n",
            missing.display()
        )
    );
    assert!(fake.config_reads.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}
