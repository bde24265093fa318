//! Unit tests of the option table: layering, defaults, every validation message.

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn env<'a>(f: &'a dyn Fn(&str) -> Option<String>) -> Environment<'a> {
    Environment {
        var: f,
        ipv6_usable: false,
        processors: 4,
    }
}

#[test]
fn defaults() {
    let o = resolve(&Layer::default(), &Layer::default(), &env(&no_env))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.min_threads, 0);
    assert_eq!(o.max_threads, 5);
    assert_eq!(o.environment, "development");
    assert_eq!(o.rackup, "config.ru");
    assert_eq!(o.binds[0].original, "tcp://0.0.0.0:9292");
    assert_eq!(o.persistent_timeout, Duration::from_secs(65));
    assert_eq!(o.first_data_timeout, Duration::from_secs(30));
    assert_eq!(o.max_keep_alive, 999);
}

#[test]
fn ipv6_default_bind() {
    let e = Environment {
        var: &no_env,
        ipv6_usable: true,
        processors: 4,
    };
    let o = resolve(&Layer::default(), &Layer::default(), &e).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.binds[0].original, "tcp://[::]:9292");
}

#[test]
fn user_beats_file_beats_env() {
    let mut file = Layer::default();
    file.set("threads", &[Value::Int(2), Value::Int(8)])
        .unwrap_or_else(|e| panic!("{e}"));
    file.set("environment", &[Value::Str("staging".into())])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut user = Layer::default();
    user.set("threads", &[Value::Int(3)])
        .unwrap_or_else(|e| panic!("{e}"));
    let vars = |n: &str| (n == "MAX_THREADS" || n == "RACK_ENV").then(|| "7".to_string());
    let o = resolve(&user, &file, &env(&vars)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((o.min_threads, o.max_threads), (3, 3));
    assert_eq!(o.environment, "staging");
    let o = resolve(&Layer::default(), &Layer::default(), &env(&vars))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.max_threads, 7);
    assert_eq!(o.environment, "7");
}

#[test]
fn binds_accumulate_and_user_binds_replace_file_binds() {
    let mut file = Layer::default();
    file.set("bind", &[Value::Str("tcp://127.0.0.1:1".into())])
        .unwrap_or_else(|e| panic!("{e}"));
    file.set("port", &[Value::Int(2), Value::Str("::1".into())])
        .unwrap_or_else(|e| panic!("{e}"));
    let o = resolve(&Layer::default(), &file, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    let urls: Vec<_> = o.binds.iter().map(|b| b.original.as_str()).collect();
    assert_eq!(urls, ["tcp://127.0.0.1:1", "tcp://[::1]:2"]);
    let mut user = Layer::default();
    user.set("port", &[Value::Int(3)])
        .unwrap_or_else(|e| panic!("{e}"));
    let o = resolve(&user, &file, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.binds.len(), 1);
    assert_eq!(o.binds[0].original, "tcp://0.0.0.0:3");
}

#[test]
fn first_rackup_wins() {
    let mut l = Layer::default();
    l.set("rackup", &[Value::Str("a.ru".into())])
        .unwrap_or_else(|e| panic!("{e}"));
    l.set("rackup", &[Value::Str("b.ru".into())])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.rackup.as_deref(), Some("a.ru"));
}

#[test]
fn errors_name_the_option() {
    let mut l = Layer::default();
    for (name, args, needle) in [
        (
            "threads",
            vec![Value::Int(5), Value::Int(2)],
            "greater than",
        ),
        ("threads", vec![Value::Int(0), Value::Int(0)], "at least 1"),
        ("threads", vec![Value::Str("x".into())], "whole number"),
        ("port", vec![Value::Int(70000)], "not a port"),
        ("bind", vec![Value::Str("nope".into())], "invalid bind URL"),
        ("bind", vec![], "wrong number"),
        (
            "persistent_timeout",
            vec![Value::Str("soon".into())],
            "seconds",
        ),
        ("max_keep_alive", vec![Value::Int(0)], "positive"),
        ("request_timeout", vec![Value::Int(0)], "more than 0"),
        (
            "request_timeout_status",
            vec![Value::Int(200)],
            "400 to 599",
        ),
        (
            "request_timeout_status",
            vec![Value::Int(600)],
            "400 to 599",
        ),
        (
            "request_timeout_status",
            vec![Value::Str("503".into())],
            "400 to 599",
        ),
        ("tag", vec![Value::Int(1)], "expected a String"),
        ("frobnicate", vec![], "unknown option"),
    ] {
        let err = l
            .set(name, &args)
            .err()
            .unwrap_or_else(|| panic!("{name} accepted"));
        assert!(err.contains(needle), "{name}: {err}");
    }
}

#[test]
fn a_huge_number_of_seconds_is_forever_not_a_crash() {
    let mut l = Layer::default();
    for v in [
        Value::Float(1e30),
        Value::Int(i64::MAX),
        Value::Str("1e300".into()),
    ] {
        l.set("drain_timeout", std::slice::from_ref(&v))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            l.drain_timeout,
            Some(Duration::from_secs(u64::from(u32::MAX)))
        );
    }
    let o = resolve(&l, &Layer::default(), &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    // A deadline that far away is still a time the clock can hold.
    assert!(std::time::Instant::now()
        .checked_add(o.drain_timeout)
        .is_some());
}

#[test]
fn binds_from_a_config_file_remember_its_line() {
    let mut l = Layer::default();
    l.set("bind", &[str("tcp://127.0.0.1:1")])
        .unwrap_or_else(|e| panic!("{e}"));
    l.set_at(
        "ssl_bind",
        &[str("127.0.0.1"), Value::Int(2)],
        "/app/puma.rb:3",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    l.set_at("workers", &[Value::Int(2)], "/app/puma.rb:4")
        .unwrap_or_else(|e| panic!("{e}"));
    let origins: Vec<Option<&str>> = l
        .binds
        .iter()
        .flatten()
        .map(|b| b.origin.as_deref())
        .collect();
    assert_eq!(origins, vec![None, Some("/app/puma.rb:3")]);
}

#[test]
fn ssl_bind_forms() {
    let mut l = Layer::default();
    for args in [
        // Puma's: paths, peer verification with a CA, flags as an Array, reuse as a Hash.
        vec![
            str("127.0.0.1"),
            Value::Int(9443),
            Value::Hash(vec![
                ("cert".into(), str("c.pem")),
                ("key".into(), str("k.pem")),
                ("ca".into(), str("ca.pem")),
                ("verify_mode".into(), str("peer")),
                (
                    "verification_flags".into(),
                    Value::Array(vec![str("PARTIAL_CHAIN")]),
                ),
                ("no_tlsv1_1".into(), Value::Bool(true)),
                (
                    "reuse".into(),
                    Value::Hash(vec![
                        ("size".into(), Value::Int(100)),
                        ("timeout".into(), Value::Int(60)),
                    ]),
                ),
                ("backlog".into(), Value::Int(64)),
            ]),
        ],
        // PEM text instead of files; no Hash at all (the development certificate).
        vec![
            str("::1"),
            Value::Int(9444),
            Value::Hash(vec![
                ("cert_pem".into(), str("-----BEGIN CERTIFICATE-----")),
                ("key_pem".into(), str("-----BEGIN PRIVATE KEY-----")),
            ]),
        ],
        vec![str("127.0.0.1"), Value::Int(9445)],
    ] {
        l.set("ssl_bind", &args).unwrap_or_else(|e| panic!("{e}"));
    }
    let err = l
        .set("bind", &[str("ssl://0.0.0.0:1?verify_mode=x")])
        .err()
        .unwrap_or_default();
    assert!(
        err.contains("verify_mode must be none, peer or force_peer"),
        "{err}"
    );
    let binds = l.binds.unwrap_or_default();
    let urls: Vec<&str> = binds.iter().map(|b| b.original.as_str()).collect();
    assert_eq!(
        urls,
        vec![
            "ssl://127.0.0.1:9443?cert=c.pem&key=k.pem&ca=ca.pem&verify_mode=peer&verification_flags=PARTIAL_CHAIN&no_tlsv1_1=true&reuse=100,60&backlog=64",
            "ssl://[::1]:9444",
            "ssl://127.0.0.1:9445"
        ],
        "the URLs hold no PEM text"
    );
    let crate::bind::BindKind::Tls { tls, .. } = &binds[1].kind else {
        panic!("not TLS")
    };
    assert_eq!(
        tls.cert,
        Some(crate::tls::Pem::Inline(
            "-----BEGIN CERTIFICATE-----".into()
        ))
    );
    assert_eq!(binds[0].backlog, 64);
}

#[test]
fn force_shutdown_forms() {
    let mut l = Layer::default();
    l.set("force_shutdown_after", &[Value::Sym("immediately".into())])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        l.force_shutdown_after,
        Some(ForceShutdown::After(Duration::ZERO))
    );
    l.set("force_shutdown_after", &[Value::Int(5)])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        l.force_shutdown_after,
        Some(ForceShutdown::After(Duration::from_secs(5)))
    );
    l.set("force_shutdown_after", &[Value::Sym("forever".into())])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.force_shutdown_after, Some(ForceShutdown::Never));
}

#[test]
fn bad_env_var_is_an_error() {
    let vars = |n: &str| (n == "PUMA_MAX_THREADS").then(|| "lots".to_string());
    let err = resolve(&Layer::default(), &Layer::default(), &env(&vars))
        .err()
        .unwrap_or_default();
    assert!(err.contains("PUMA_MAX_THREADS"), "{err}");
}

#[test]
fn thread_handoff_from_the_environment() {
    let handoff = |value: &'static str| {
        let vars = move |n: &str| (n == "CATAMOUNT_THREAD_HANDOFF").then(|| value.to_string());
        resolve(&Layer::default(), &Layer::default(), &env(&vars)).map(|o| o.thread_handoff)
    };
    assert_eq!(
        handoff(""),
        Ok(ThreadHandoff::GvlAware),
        "unset: the default"
    );
    assert_eq!(handoff("gvl"), Ok(ThreadHandoff::GvlAware));
    assert_eq!(handoff(" eager "), Ok(ThreadHandoff::Eager));
    assert_eq!(
        handoff("lazy"),
        Err(
            "environment variable CATAMOUNT_THREAD_HANDOFF=\"lazy\" is not \"gvl\" or \"eager\""
                .into()
        )
    );
}

#[test]
fn reactor_scheduling_from_the_environment() {
    let policy = |value: &'static str| {
        let vars = move |n: &str| (n == "CATAMOUNT_REACTOR_SCHEDULING").then(|| value.to_string());
        resolve(&Layer::default(), &Layer::default(), &env(&vars)).map(|o| o.reactor_scheduling)
    };
    assert_eq!(
        policy(""),
        Ok(ReactorScheduling::Auto),
        "unset: the default"
    );
    assert_eq!(policy("auto"), Ok(ReactorScheduling::Auto));
    assert_eq!(policy("batch"), Ok(ReactorScheduling::Batch));
    assert_eq!(policy(" normal "), Ok(ReactorScheduling::Normal));
    assert_eq!(
        policy("fifo"),
        Err("environment variable CATAMOUNT_REACTOR_SCHEDULING=\"fifo\" is not \"auto\", \"batch\" or \"normal\"".into())
    );
}

fn set(layer: &mut Layer, name: &str, args: Vec<Value>) {
    layer
        .set(name, &args)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

fn sym(s: &str) -> Value {
    Value::Sym(s.into())
}

fn str(s: &str) -> Value {
    Value::Str(s.into())
}

#[test]
fn web_concurrency_number_auto_and_garbage() {
    let two = |n: &str| (n == "WEB_CONCURRENCY").then(|| "2".to_string());
    let o =
        resolve(&Layer::default(), &Layer::default(), &env(&two)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.workers, 2);
    assert_eq!(o.not_supported_yet(), None, "cluster mode is served");
    let mut fork = Layer::default();
    fork.set("fork_worker", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let o = resolve(&Layer::default(), &fork, &env(&two)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.fork_worker, Some(1000));
    assert_eq!(o.not_supported_yet(), None, "fork_worker is served");
    let auto = |n: &str| (n == "WEB_CONCURRENCY").then(|| "auto".to_string());
    let o = resolve(&Layer::default(), &Layer::default(), &env(&auto))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.workers, 4);
    let bad = |n: &str| (n == "WEB_CONCURRENCY").then(|| "many".to_string());
    let err = resolve(&Layer::default(), &Layer::default(), &env(&bad))
        .err()
        .unwrap_or_default();
    assert!(err.contains("WEB_CONCURRENCY"), "{err}");
    let mut file = Layer::default();
    set(&mut file, "workers", vec![Value::Int(0)]);
    let o = resolve(&Layer::default(), &file, &env(&two)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.workers, 0, "the file's workers beats the environment");
    assert_eq!(o.not_supported_yet(), None);
}

#[test]
fn later_subsystems_are_stored_and_named() {
    let mut file = Layer::default();
    set(&mut file, "worker_timeout", vec![Value::Int(3600)]);
    set(&mut file, "preload_app!", vec![]);
    set(&mut file, "fork_worker", vec![]);
    set(&mut file, "plugin", vec![sym("tmp_restart")]);
    let o = resolve(&Layer::default(), &file, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.worker_timeout, Duration::from_secs(3600));
    assert_eq!(o.worker_boot_timeout, Duration::from_secs(3600));
    assert_eq!(o.preload_app, Some(true));
    assert_eq!(o.fork_worker, Some(1000));
    assert_eq!(o.plugins, ["tmp_restart"]);
    assert_eq!(
        o.not_supported_yet(),
        None,
        "single mode with cluster settings boots"
    );
    let mut control = Layer::default();
    set(
        &mut control,
        "activate_control_app",
        vec![str("tcp://127.0.0.1:9293")],
    );
    let o = resolve(&Layer::default(), &control, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.not_supported_yet(), None, "the control server is served");
}

#[test]
fn control_flags_replace_only_what_they_name() {
    let mut file = Layer::default();
    set(
        &mut file,
        "activate_control_app",
        vec![
            str("unix:///tmp/c.sock"),
            Value::Hash(vec![
                ("auth_token".into(), str("filetok")),
                ("data_only".into(), Value::Bool(true)),
            ]),
        ],
    );
    let mut user = Layer::default();
    set(&mut user, "control_url", vec![str("tcp://127.0.0.1:0")]);
    let o = resolve(&user, &file, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    let c = o.control.unwrap_or_else(|| panic!("a control server"));
    assert_eq!(c.url, "tcp://127.0.0.1:0", "the flag's URL");
    assert_eq!(c.auth_token.as_deref(), Some("filetok"), "the file's token");
    assert!(c.data_only, "the file's data_only");
    set(&mut user, "control_auth_token", vec![str("none")]);
    let o = resolve(&user, &file, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    let c = o.control.unwrap_or_else(|| panic!("a control server"));
    assert!(
        c.no_token && c.auth_token.is_none(),
        "--control-token none wins"
    );
    let mut token_only = Layer::default();
    set(&mut token_only, "control_auth_token", vec![str("t")]);
    let o =
        resolve(&token_only, &Layer::default(), &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.control, None, "a token without a URL turns nothing on");
}

#[test]
fn network_options() {
    let mut l = Layer::default();
    set(&mut l, "set_default_host", vec![str("::1")]);
    set(&mut l, "port", vec![Value::Int(3000)]);
    set(
        &mut l,
        "supported_http_methods",
        vec![Value::Array(vec![str("GET"), str("PROPFIND")])],
    );
    set(&mut l, "http_content_length_limit", vec![Value::Int(1024)]);
    set(
        &mut l,
        "set_remote_address",
        vec![Value::Hash(vec![("header".into(), str("X-Real-IP"))])],
    );
    set(&mut l, "queue_requests", vec![Value::Bool(false)]);
    set(&mut l, "max_fast_inline", vec![Value::Int(7)]);
    let o = resolve(&Layer::default(), &l, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.binds[0].original, "tcp://[::1]:3000");
    assert_eq!(
        o.http_methods,
        HttpMethods::Only(vec!["GET".into(), "PROPFIND".into()])
    );
    assert_eq!(o.http_content_length_limit, Some(1024));
    assert_eq!(o.remote_address, RemoteAddress::Header("X-Real-IP".into()));
    assert!(
        !o.enable_keep_alives,
        "queue_requests false turns keep-alive off"
    );
    assert_eq!(
        o.max_keep_alive, 7,
        "max_fast_inline stands in for max_keep_alive"
    );
    set(
        &mut l,
        "set_remote_address",
        vec![Value::Hash(vec![("proxy_protocol".into(), sym("v1"))])],
    );
    assert_eq!(l.remote_address, Some(RemoteAddress::ProxyV1));
    set(
        &mut l,
        "set_remote_address",
        vec![Value::Hash(vec![("proxy_protocol".into(), sym("v2"))])],
    );
    assert_eq!(l.remote_address, Some(RemoteAddress::ProxyV2));
    set(&mut l, "set_remote_address", vec![sym("localhost")]);
    assert_eq!(
        l.remote_address,
        Some(RemoteAddress::Fixed("127.0.0.1".into()))
    );
    set(&mut l, "clear_binds!", vec![]);
    assert_eq!(l.binds, Some(Vec::new()));
}

#[test]
fn more_bad_values_name_the_option() {
    let mut l = Layer::default();
    for (name, args, needle) in [
        (
            "supported_http_methods",
            vec![Value::Array(vec![str("get")])],
            "upper-case",
        ),
        (
            "supported_http_methods",
            vec![Value::Array(vec![str("GET"), str("GET")])],
            "twice",
        ),
        (
            "supported_http_methods",
            vec![Value::Int(1)],
            "expected :any",
        ),
        (
            "set_remote_address",
            vec![Value::Hash(vec![("proxy_protocol".into(), sym("v3"))])],
            ":v1",
        ),
        (
            "set_remote_address",
            vec![Value::Hash(vec![("hedaer".into(), str("X"))])],
            "unknown key",
        ),
        ("workers", vec![str("lots")], "whole number"),
        ("worker_timeout", vec![Value::Int(0)], "more than 0"),
        ("worker_culling_strategy", vec![sym("random")], ":youngest"),
        ("io_selector_backend", vec![sym("iocp")], "expected one of"),
        (
            "ssl_bind",
            vec![
                str("0.0.0.0"),
                Value::Int(1),
                Value::Hash(vec![("cert".into(), str("c.pem"))]),
            ],
            "needs its key",
        ),
        (
            "ssl_bind",
            vec![
                str("0.0.0.0"),
                Value::Int(1),
                Value::Hash(vec![("verify_mode".into(), sym("force_peer"))]),
            ],
            "need ca=",
        ),
        (
            "ssl_bind",
            vec![
                str("0.0.0.0"),
                Value::Int(1),
                Value::Hash(vec![("reuse".into(), Value::Float(1.5))]),
            ],
            "ssl_bind: reuse: unexpected",
        ),
        ("state_permission", vec![Value::Int(0o17777)], "file mode"),
        ("plugin", vec![str("../evil")], "not a plugin name"),
        (
            "activate_control_app",
            vec![str("http://x")],
            "invalid bind URL",
        ),
        (
            "http_content_length_limit",
            vec![Value::Int(-1)],
            "whole number",
        ),
    ] {
        let err = l
            .set(name, &args)
            .err()
            .unwrap_or_else(|| panic!("{name} accepted"));
        assert!(err.contains(needle), "{name}: {err}");
        assert!(err.starts_with(name), "{name}: {err}");
    }
}

#[test]
fn worker_timeout_must_exceed_check_interval() {
    let mut l = Layer::default();
    set(&mut l, "worker_check_interval", vec![Value::Int(10)]);
    set(&mut l, "worker_timeout", vec![Value::Int(5)]);
    let err = resolve(&Layer::default(), &l, &env(&no_env))
        .err()
        .unwrap_or_default();
    assert!(err.contains("worker_check_interval"), "{err}");
}

#[test]
fn definitions_are_consistent() {
    let mut names: Vec<&str> = Vec::new();
    for d in DEFINITIONS {
        for m in d.methods {
            assert!(!names.contains(&m.name), "{} defined twice", m.name);
            names.push(m.name);
        }
        for f in d.flags {
            assert!(
                !f.help.is_empty() || f.long.starts_with("no-"),
                "{}: --{} has no help text",
                d.name,
                f.long
            );
            assert!(
                d.methods.iter().any(|m| m.name == f.method),
                "{}: flag {} calls {}, not one of its methods",
                d.name,
                f.display(),
                f.method
            );
        }
        assert!(!d.doc.is_empty() && !d.default.is_empty(), "{}", d.name);
        assert!(
            d.example.is_empty() == d.methods.iter().all(|m| !m.dsl),
            "{}: an example is a config-file line, given exactly when there is a DSL method",
            d.name
        );
    }
    let dsl: Vec<&str> = dsl_methods().map(|m| m.name).collect();
    assert!(dsl.contains(&"preload_app!") && dsl.contains(&"quiet"));
    assert!(
        !dsl.contains(&"redirect_stdout"),
        "flag-only methods are not DSL methods"
    );
}

#[test]
fn every_flag_is_claimed_once() {
    // The command's own flags are looked up first, then the options' in table order: a second
    // claim on a flag would silently never be reached.
    let mut longs: Vec<&str> = Vec::new();
    let mut shorts: Vec<char> = Vec::new();
    let command = crate::cli::COMMAND_FLAGS.iter().map(|(l, s, _)| (*l, *s));
    let options = DEFINITIONS
        .iter()
        .flat_map(|d| d.flags)
        .map(|f| (f.long, f.short));
    for (long, short) in command.chain(options) {
        assert!(!longs.contains(&long), "--{long} claimed twice");
        longs.push(long);
        if let Some(c) = short {
            assert!(!shorts.contains(&c), "-{c} claimed twice");
            shorts.push(c);
        }
    }
    assert!(longs.contains(&"config") && shorts.contains(&'t'));
}

#[test]
fn every_example_uses_its_own_method() {
    for d in DEFINITIONS.iter().filter(|d| !d.example.is_empty()) {
        let word = d.example.split_whitespace().next().unwrap_or_default();
        assert!(
            d.methods.iter().any(|m| m.dsl && m.name == word),
            "{}: example {:?} does not call one of its DSL methods",
            d.name,
            d.example
        );
    }
}

#[test]
fn default_options_are_the_documented_values() {
    let o = Options::default();
    assert_eq!(o.binds[0].original, "tcp://0.0.0.0:9292");
    assert_eq!((o.min_threads, o.max_threads), (0, 5));
    assert_eq!(o.environment, "development");
    assert_eq!(o.rackup, "config.ru");
    assert_eq!(o.persistent_timeout, Duration::from_secs(65));
    assert_eq!(o.first_data_timeout, Duration::from_secs(30));
    assert_eq!(o.max_keep_alive, 999);
    assert_eq!(o.force_shutdown_after, ForceShutdown::Never);
    assert!(o.queue_requests && o.enable_keep_alives && o.allow_underscore_headers);
    assert_eq!(o.http_methods, HttpMethods::Standard);
    assert_eq!(o.http_content_length_limit, None);
    assert_eq!(
        (
            o.max_buffered_response,
            o.max_buffered_total,
            o.max_spilled_total
        ),
        (16 << 20, 64 << 20, 1 << 30)
    );
    assert_eq!(o.remote_address, RemoteAddress::Socket);
    assert_eq!(o.thread_handoff, ThreadHandoff::GvlAware);
    assert_eq!(o.reactor_scheduling, ReactorScheduling::Auto);
    assert!(!o.log_requests && !o.early_hints && !o.fiber_per_request);
    assert_eq!(o.workers, 0);
    assert_eq!(o.wait_for_less_busy_worker, Duration::from_millis(5));
    assert_eq!(o.worker_check_interval, Duration::from_secs(5));
    assert_eq!(o.worker_timeout, Duration::from_secs(60));
    assert_eq!(o.worker_boot_timeout, Duration::from_secs(60));
    assert_eq!(o.worker_shutdown_timeout, Duration::from_secs(30));
    assert_eq!(o.io_selector_backend, "auto");
    assert_eq!(o.max_io_threads, 0);
}

/// How the docs' Default column writes an exported default.
fn rendered(v: &Value) -> Vec<String> {
    match v {
        Value::Bool(true) => vec!["true".into(), "on".into()],
        Value::Bool(false) => vec!["false".into(), "off".into()],
        Value::Int(n) => vec![n.to_string()],
        Value::Float(f) => vec![format!("{f} s")],
        Value::Sym(s) => vec![format!("`:{s}`")],
        _ => Vec::new(),
    }
}

#[test]
fn default_texts_match_the_defaults() {
    // Defaults the text describes rather than states (a reference to another option or a
    // list), checked by `default_options_are_the_documented_values` instead.
    let described = ["workers", "worker_boot_timeout", "supported_http_methods"];
    let o = Options::default();
    let mut checked = 0;
    for d in DEFINITIONS.iter().filter(|d| !described.contains(&d.name)) {
        let exported: Vec<_> = d.fields.iter().flat_map(|f| o.export_field(f)).collect();
        let [(_, value)] = exported.as_slice() else {
            continue;
        };
        let forms = rendered(value);
        if forms.is_empty() {
            continue;
        }
        // The stated value comes first; environment variables or notes follow.
        let stated = d
            .default
            .split([';', '('])
            .next()
            .unwrap_or_default()
            .trim();
        assert!(
            forms.iter().any(|f| f == stated),
            "{}: the docs say the default is {:?}, the table's value reads {:?}",
            d.name,
            d.default,
            forms
        );
        checked += 1;
    }
    assert!(checked > 20, "only {checked} defaults checked");
}

#[test]
fn export_uses_pumas_keys() {
    let o = Options::default();
    let exported = o.export();
    let keys: Vec<&str> = exported.iter().map(|(k, _)| *k).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), keys.len(), "a key exported twice: {keys:?}");
    // Each field is exported under its own name, except these (Puma's other names, more
    // than one key, or not exported at all).
    let exceptions: &[(&str, &[&str])] = &[
        ("thread_handoff", &[]),
        ("reactor_scheduling", &[]),
        ("activated_sockets", &[]),
        ("log_requests_json", &[]),
        ("http_methods", &["supported_http_methods"]),
        (
            "remote_address",
            &["remote_address", "remote_address_value"],
        ),
        ("sync_stdio", &["mutate_stdout_and_stderr_to_sync_on_write"]),
        ("state_path", &["state"]),
        ("restart_command", &["restart_cmd"]),
        (
            "control",
            &["control_url", "control_auth_token", "control_data_only"],
        ),
    ];
    let mut expected: Vec<&str> = Vec::new();
    for field in DEFINITIONS.iter().flat_map(|d| d.fields) {
        let keys: Vec<&str> = o.export_field(field).iter().map(|(k, _)| *k).collect();
        let want: Vec<&str> = match exceptions.iter().find(|(f, _)| f == field) {
            Some((_, keys)) => keys.to_vec(),
            None => vec![*field],
        };
        assert_eq!(keys, want, "{field}'s keys");
        expected.extend(want);
    }
    for (field, _) in exceptions {
        assert!(
            DEFINITIONS.iter().any(|d| d.fields.contains(field)),
            "an exception for no field: {field}"
        );
    }
    expected.sort_unstable();
    assert_eq!(sorted, expected);
    let get = |key: &str| {
        exported
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("force_shutdown_after"), Some(sym("forever")));
    assert_eq!(get("io_selector_backend"), Some(sym("auto")));
    assert_eq!(get("persistent_timeout"), Some(Value::Float(65.0)));
    assert_eq!(
        get("binds"),
        Some(Value::Array(vec![str("tcp://0.0.0.0:9292")]))
    );
    assert_eq!(get("remote_address"), Some(sym("socket")));
    assert_eq!(get("tag"), Some(Value::Nil));
    let mut l = Layer::default();
    set(&mut l, "max_keep_alive", vec![Value::Float(f64::INFINITY)]);
    let o = resolve(&Layer::default(), &l, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    let exported = o.export();
    assert!(exported
        .iter()
        .any(|(k, v)| *k == "max_keep_alive" && *v == Value::Float(f64::INFINITY)));
}

#[test]
fn given_values_wait_for_the_whole_file_to_check_options_against_each_other() {
    let mut file = Layer::default();
    set(&mut file, "worker_timeout", vec![Value::Int(3)]);
    let given = given_values(&file, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        given.contains(&("worker_timeout", Value::Float(3.0))),
        "{given:?}"
    );
    assert!(
        resolve(&Layer::default(), &file, &env(&no_env)).is_err(),
        "the whole file is still checked"
    );
    set(&mut file, "worker_check_interval", vec![Value::Int(1)]);
    assert!(resolve(&Layer::default(), &file, &env(&no_env)).is_ok());
}

#[test]
fn given_values_are_what_the_file_set_under_pumas_keys() {
    let mut file = Layer::default();
    set(&mut file, "set_default_host", vec![str("::1")]);
    set(&mut file, "port", vec![Value::Int(3000)]);
    set(&mut file, "quiet", vec![]);
    set(&mut file, "threads", vec![Value::Int(2), Value::Int(4)]);
    set(
        &mut file,
        "stdout_redirect",
        vec![str("out.log"), str("err.log"), Value::Bool(true)],
    );
    set(
        &mut file,
        "activate_control_app",
        vec![str("tcp://127.0.0.1:9293")],
    );
    set(&mut file, "extra_runtime_dependencies", vec![]);
    let given = given_values(&file, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    let get = |key: &str| {
        given
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("default_host"), Some(str("::1")));
    assert_eq!(
        get("binds"),
        Some(Value::Array(vec![str("tcp://[::1]:3000")])),
        "the bind the server makes"
    );
    assert_eq!(get("log_requests"), Some(Value::Bool(false)));
    assert_eq!(get("min_threads"), Some(Value::Int(2)));
    assert_eq!(get("max_threads"), Some(Value::Int(4)));
    assert_eq!(get("redirect_stdout"), Some(str("out.log")));
    assert_eq!(get("redirect_stderr"), Some(str("err.log")));
    assert_eq!(get("redirect_append"), Some(Value::Bool(true)));
    assert_eq!(get("control_url"), Some(str("tcp://127.0.0.1:9293")));
    assert_eq!(
        get("extra_runtime_dependencies"),
        Some(Value::Array(vec![]))
    );
    assert_eq!(
        get("workers"),
        None,
        "a default is not something the file set"
    );
    assert_eq!(get("persistent_timeout"), None);
}

#[test]
fn log_requests_json_and_what_keeps_it() {
    let resolved = |user: &[&[Value]], file: &[&[Value]]| {
        let mut layers = (Layer::default(), Layer::default());
        for (layer, calls) in [(&mut layers.0, user), (&mut layers.1, file)] {
            for args in calls {
                layer
                    .set("log_requests", args)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let o = resolve(&layers.0, &layers.1, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
        (o.log_requests, o.log_requests_json)
    };
    let json: &[Value] = &[Value::Sym("json".into())];
    assert_eq!(resolved(&[], &[]), (false, false));
    assert_eq!(resolved(&[], &[&[]]), (true, false));
    assert_eq!(resolved(&[], &[json]), (true, true));
    assert_eq!(resolved(&[], &[&[Value::Str("json".into())]]), (true, true));
    // Any other truthy value is Puma's "on": plain lines.
    assert_eq!(resolved(&[], &[&[Value::Str("yes".into())]]), (true, false));
    assert_eq!(resolved(&[], &[&[Value::Bool(false)]]), (false, false));
    // `-v` turns it on without choosing the format: the file's JSON stays.
    assert_eq!(resolved(&[&[]], &[json]), (true, true));
    assert_eq!(resolved(&[&[Value::Bool(false)]], &[json]), (false, false));
}
