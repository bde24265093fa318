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
    let err = handoff("lazy").err().unwrap_or_default();
    assert!(err.contains("CATAMOUNT_THREAD_HANDOFF=\"lazy\""), "{err}");
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
    let mut tls = Layer::default();
    set(
        &mut tls,
        "ssl_bind",
        vec![
            str("0.0.0.0"),
            Value::Int(9443),
            Value::Hash(vec![
                ("cert".into(), str("c.pem")),
                ("key".into(), str("k.pem")),
            ]),
        ],
    );
    let o = resolve(&Layer::default(), &tls, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        o.not_supported_yet().as_deref(),
        Some("TLS (ssl://0.0.0.0:9443)")
    );
    let mut control = Layer::default();
    set(
        &mut control,
        "activate_control_app",
        vec![str("tcp://127.0.0.1:9293")],
    );
    let o = resolve(&Layer::default(), &control, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
    assert!(o
        .not_supported_yet()
        .is_some_and(|w| w.contains("control server")));
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
            vec![Value::Hash(vec![("proxy_protocol".into(), sym("v2"))])],
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
            vec![str("0.0.0.0"), Value::Int(1), Value::Hash(vec![])],
            "needs cert",
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
    let key = |name: &str| dsl_methods().find(|m| m.name == name).map(|m| m.key);
    assert_eq!(key("state_path"), Some("state"), "get(:state) reads it");
    assert_eq!(key("tag"), Some("tag"));
    assert!(dsl.contains(&"preload_app!") && dsl.contains(&"quiet"));
    assert!(
        !dsl.contains(&"redirect_stdout"),
        "flag-only methods are not DSL methods"
    );
}

#[test]
fn default_options_are_the_resolved_defaults() {
    let o = Options::default();
    assert_eq!(
        Ok(&o),
        resolve(&Layer::default(), &Layer::default(), &env(&no_env)).as_ref()
    );
    assert_eq!(o.max_keep_alive, 999);
    assert_eq!(o.thread_handoff, ThreadHandoff::GvlAware);
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
    let mut expected = vec![
        "binds",
        "min_threads",
        "max_threads",
        "environment",
        "rackup",
        "tag",
        "log_requests",
        "pidfile",
        "persistent_timeout",
        "first_data_timeout",
        "force_shutdown_after",
        "enable_keep_alives",
        "max_keep_alive",
        "silent",
        "directory",
        "idle_timeout",
        "queue_requests",
        "drain_on_shutdown",
        "remote_address",
        "remote_address_value",
        "rack_url_scheme",
        "supported_http_methods",
        "http_content_length_limit",
        "allow_underscore_headers",
        "io_selector_backend",
        "early_hints",
        "max_io_threads",
        "fiber_per_request",
        "raise_exception_on_sigterm",
        "redirect_stdout",
        "redirect_stderr",
        "redirect_append",
        "mutate_stdout_and_stderr_to_sync_on_write",
        "debug",
        "shutdown_debug",
        "restart_cmd",
        "state",
        "state_permission",
        "control_url",
        "control_auth_token",
        "plugins",
        "workers",
        "preload_app",
        "fork_worker",
        "prune_bundler",
        "extra_runtime_dependencies",
        "wait_for_less_busy_worker",
        "worker_culling_strategy",
        "worker_check_interval",
        "worker_timeout",
        "worker_boot_timeout",
        "worker_shutdown_timeout",
        "nakayoshi_fork",
        "silence_single_worker_warning",
        "silence_fork_callback_warning",
    ];
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
