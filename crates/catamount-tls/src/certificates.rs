//! Certificate chains and private keys from PEM files or PEM text, keys encrypted with a
//! passphrase included (PKCS#8, the passphrase from `key_password_command`).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use catamount_config::tls::Pem;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How long `key_password_command` may take before the boot gives up on it.
const PASSWORD_COMMAND_LIMIT: Duration = Duration::from_secs(10);

/// Which PEM a message is about: the option it came from (`cert`, `key`, `ca`) and where it
/// was read (never the PEM text itself: it may be a key), so a bind naming two files in one
/// directory still says which one is wrong.
fn origin(what: &str, pem: &Pem) -> String {
    match pem {
        Pem::File(path) => format!("{what} {}", path.display()),
        Pem::Inline(_) => format!("{what}_pem"),
    }
}

fn read(what: &str, pem: &Pem) -> Result<Vec<u8>, String> {
    match pem {
        Pem::File(path) => {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", origin(what, pem)))
        }
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
    }
}

/// The certificates in `pem` (the option `what`), leaf first.
pub(crate) fn chain(what: &str, pem: &Pem) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(what, pem)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", origin(what, pem)))?;
    if chain.is_empty() {
        return Err(format!("{}: holds no certificate", origin(what, pem)));
    }
    Ok(chain)
}

/// The private key in `pem`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), or an encrypted PKCS#8 key
/// opened with the passphrase `password_command` prints.
pub(crate) fn key(
    pem: &Pem,
    password_command: Option<&str>,
) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read("key", pem)?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let Some(command) = password_command else {
            return Err(format!(
                "{}: the key is encrypted: key_password_command must give its passphrase",
                origin("key", pem)
            ));
        };
        let password = run_password_command(command)?;
        let (_, document) = pkcs8::der::SecretDocument::from_pem(&text)
            .map_err(|e| format!("{}: not a PEM key: {e}", origin("key", pem)))?;
        let encrypted = pkcs8::EncryptedPrivateKeyInfo::try_from(document.as_bytes())
            .map_err(|e| format!("{}: not an encrypted PKCS#8 key: {e}", origin("key", pem)))?;
        let plain = encrypted.decrypt(password.as_bytes()).map_err(|_| {
            format!(
                "{}: the passphrase from key_password_command does not open the key",
                origin("key", pem)
            )
        })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "{}: the key is encrypted in OpenSSL's legacy format; convert it to PKCS#8 (openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD -out NEW)",
            origin("key", pem)
        ));
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{}: holds no private key", origin("key", pem))
        }
        other => format!("{}: not a PEM private key: {other}", origin("key", pem)),
    })
}

/// Runs `command` with `sh -c`; its standard output, without the line end, is the passphrase.
/// A command that fails, prints nothing or takes longer than [`PASSWORD_COMMAND_LIMIT`] stops
/// the boot.
fn run_password_command(command: &str) -> Result<String, String> {
    password_from(command, PASSWORD_COMMAND_LIMIT)
}

/// [`run_password_command`] within `limit`. The command runs in a process group of its own,
/// killed whole when the limit is reached: a shell's children die with it, and a child left
/// in the background holding the output open cannot keep the boot waiting for its end.
fn password_from(command: &str, limit: Duration) -> Result<String, String> {
    use std::os::unix::process::CommandExt;
    let fail = |why: String| format!("key_password_command ({command}): {why}");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    let group = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    let kill_group = || {
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    };
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| fail("no output".into()))?;
    // The output is read on a thread so that the waits below can be bounded.
    let (sender, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let _ = sender.send(out);
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                kill_group();
                let _ = child.wait();
                return Err(fail(format!("still running after {} s", limit.as_secs())));
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    };
    let out = match output.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(out) => out,
        Err(_) => {
            kill_group();
            return Err(fail(format!(
                "its output was still open after {} s (a process it left in the background?)",
                limit.as_secs()
            )));
        }
    };
    if !status.success() {
        return Err(fail(format!("it failed ({status})")));
    }
    let password =
        String::from_utf8(out).map_err(|_| fail("it printed bytes that are not UTF-8".into()))?;
    let password = password.strip_suffix('\n').unwrap_or(&password);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(fail("it printed no passphrase".into()));
    }
    Ok(password.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A scratch file path for a pid written by a command.
    fn pid_file(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("catamount-pw-{name}-{}", std::process::id()))
    }

    /// Waits (bounded) until the process whose pid `file` holds is gone (or a zombie: killed,
    /// not yet reaped by whoever adopted it).
    fn assert_ends(file: &std::path::Path) {
        let pid = std::fs::read_to_string(file).unwrap().trim().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => break,
                Ok(stat)
                    if stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z') =>
                {
                    break
                }
                Ok(_) => {
                    assert!(Instant::now() < deadline, "process {pid} still runs");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let _ = std::fs::remove_file(file);
    }

    #[test]
    fn the_output_is_the_passphrase() {
        assert_eq!(
            password_from("printf 'secret\\n'", Duration::from_secs(10)).unwrap(),
            "secret"
        );
    }

    #[test]
    fn a_command_still_running_at_the_limit_is_killed_with_its_children() {
        let file = pid_file("slow");
        let command = format!("sleep 30 & echo $! > {}; wait", file.display());
        let err = password_from(&command, Duration::from_secs(1)).unwrap_err();
        assert!(err.ends_with("still running after 1 s"), "{err}");
        assert_ends(&file);
    }

    #[test]
    fn a_child_left_holding_the_output_open_does_not_hold_up_the_boot() {
        let file = pid_file("background");
        let command = format!("sleep 30 & echo $! > {}; echo pw", file.display());
        let err = password_from(&command, Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("its output was still open after 1 s"), "{err}");
        assert_ends(&file);
    }
}
