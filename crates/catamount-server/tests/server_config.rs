//! `ServerConfig` is made from the resolved options: one set of defaults (the option
//! definitions'), and each option reaches the knob it drives.

use std::time::Duration;

use catamount_config::{resolve, Environment, Layer, Options, Value};
use catamount_http::MethodPolicy;
use catamount_server::{Handoff, ServerConfig};

fn options(settings: &[(&str, Vec<Value>)], vars: &dyn Fn(&str) -> Option<String>) -> Options {
    let mut file = Layer::default();
    for (name, args) in settings {
        file.set(name, args).unwrap_or_else(|e| panic!("{e}"));
    }
    let env = Environment {
        var: vars,
        ipv6_usable: false,
        processors: 2,
    };
    resolve(&Layer::default(), &file, &env).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn defaults_are_the_documented_values() {
    let config = ServerConfig::default();
    assert_eq!(config.persistent_timeout, Duration::from_secs(65));
    assert_eq!(config.first_data_timeout, Duration::from_secs(30));
    assert_eq!(config.max_keep_alive, 999);
    assert_eq!((config.min_threads, config.max_threads), (0, 5));
    assert!(config.keep_alive && config.proxy_protocol.is_none() && !config.drain_on_shutdown);
    assert_eq!(config.limits.methods, MethodPolicy::standard());
    assert_eq!(config.limits.max_body, None);
    assert_eq!(config.handoff, Handoff::GvlAware);
    assert_eq!(config.busy_accept_delay, None, "single mode");
}

#[test]
fn each_option_reaches_its_knob() {
    let s = |v: &str| Value::Str(v.into());
    let o = options(
        &[
            ("threads", vec![Value::Int(2), Value::Int(7)]),
            ("persistent_timeout", vec![Value::Int(3)]),
            ("first_data_timeout", vec![Value::Int(4)]),
            ("max_keep_alive", vec![Value::Int(9)]),
            ("queue_requests", vec![Value::Bool(false)]),
            ("supported_http_methods", vec![Value::Sym("any".into())]),
            ("http_content_length_limit", vec![Value::Int(100)]),
            (
                "set_remote_address",
                vec![Value::Hash(vec![(
                    "proxy_protocol".into(),
                    Value::Sym("v1".into()),
                )])],
            ),
            ("drain_on_shutdown", vec![]),
            ("workers", vec![Value::Int(2)]),
            ("wait_for_less_busy_worker", vec![s("0.02")]),
        ],
        &|n| (n == "CATAMOUNT_THREAD_HANDOFF").then(|| "eager".to_string()),
    );
    let config = ServerConfig::from(&o);
    assert_eq!((config.min_threads, config.max_threads), (2, 7));
    assert_eq!(config.persistent_timeout, Duration::from_secs(3));
    assert_eq!(config.first_data_timeout, Duration::from_secs(4));
    assert_eq!(config.max_keep_alive, 9);
    assert!(
        !config.keep_alive,
        "queue_requests false turns keep-alive off"
    );
    assert_eq!(config.limits.methods, MethodPolicy::Any);
    assert_eq!(config.limits.max_body, Some(100));
    assert_eq!(
        config.proxy_protocol,
        Some(catamount_http::ProxyVersion::V1)
    );
    assert!(config.drain_on_shutdown);
    assert_eq!(config.handoff, Handoff::Eager);
    assert_eq!(config.busy_accept_delay, Some(Duration::from_millis(20)));
    let one_worker = options(&[("workers", vec![Value::Int(1)])], &|_| None);
    assert_eq!(ServerConfig::from(&one_worker).busy_accept_delay, None);
}
