//! Test certificates, made with the real `openssl`.

use std::path::Path;
use std::process::Command;

use super::require_binary;

/// Writes into `dir` a test CA (`ca.pem`, `ca.key`), an unrelated CA
/// (`other.pem`) and a server certificate signed by the first CA
/// (`server.pem`, `server.key`) whose subject and only alternative name is
/// `host` (a DNS name, or an IP address).
pub fn make_certs(dir: &Path, host: &str) {
    let san = if host.parse::<std::net::IpAddr>().is_ok() {
        format!("IP:{host}")
    } else {
        format!("DNS:{host}")
    };
    std::fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
    )
    .expect("write ext.cnf");
    let key = "-newkey rsa:2048 -nodes";
    for args in [
        format!("req -x509 {key} -keyout ca.key -out ca.pem -days 2 -subj /CN=dbcanary-test-ca"),
        format!("req -x509 {key} -keyout other.key -out other.pem -days 2 -subj /CN=other-ca"),
        format!("req {key} -keyout server.key -out server.csr -subj /CN={host}"),
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf".to_string(),
    ] {
        let out = Command::new(require_binary("openssl", "openssl"))
            .current_dir(dir)
            .args(args.split(' '))
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
