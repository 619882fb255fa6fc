//! The load benchmark's config generator (`benches/load/gen_configs.py`)
//! writes a Gatehouse config that the real binary accepts, and an Nginx
//! config that `nginx -t` accepts (`.ci/deps.sh --test` installs Nginx).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Generates the certificates and both configs into `dir`.
fn generate(dir: &Path, workers: u32) {
    let certs = dir.join("certs");
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args([
            "cert",
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
            "--out",
        ])
        .arg(&certs)
        .output()
        .expect("run gatehouse cert");
    assert!(out.status.success(), "gatehouse cert: {}", text(&out));

    let out = Command::new("python3")
        .arg(repo().join("benches/load/gen_configs.py"))
        .arg(dir)
        .args(["--workers", &workers.to_string()])
        .arg("--site")
        .arg(dir.join("site"))
        .args(["--backend-port", "19001", "--backend-port", "19002"])
        .args(["--gh-http-port", "18081", "--gh-https-port", "18444"])
        .args(["--ngx-http-port", "28081", "--ngx-https-port", "28444"])
        .arg("--cert")
        .arg(certs.join("server.crt"))
        .arg("--key")
        .arg(certs.join("server.key"))
        .output()
        .expect("run python3 benches/load/gen_configs.py");
    assert!(out.status.success(), "gen_configs.py: {}", text(&out));
    for f in [
        "gatehouse.toml",
        "nginx.conf",
        "backend.conf",
        "site/small.txt",
    ] {
        assert!(dir.join(f).is_file(), "{f} not written");
    }
    assert_eq!(
        std::fs::metadata(dir.join("site/small.txt")).unwrap().len(),
        1024
    );
    assert_eq!(
        std::fs::metadata(dir.join("site/large.bin")).unwrap().len(),
        1024 * 1024
    );
}

fn nginx_on_path() -> bool {
    Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn generated_configs_are_valid() {
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), workers);

        let toml = std::fs::read_to_string(dir.path().join("gatehouse.toml")).unwrap();
        assert!(toml.contains(&format!("threads = {workers}")), "{toml}");
        assert!(toml.contains("access_log = \"off\""), "{toml}");
        assert!(toml.contains("redirect_to_https = false"), "{toml}");
        assert!(!toml.contains("rate_limit"), "{toml}");
        assert!(!toml.contains("[upstream.backend.health]"), "{toml}");

        let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("check")
            .arg("-c")
            .arg(dir.path().join("gatehouse.toml"))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "gatehouse check: {}",
            text(&out)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

        let nginx = std::fs::read_to_string(dir.path().join("nginx.conf")).unwrap();
        assert!(
            nginx.contains(&format!("worker_processes {workers};")),
            "{nginx}"
        );
        for needle in [
            "keepalive 64;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "proxy_set_header X-Real-IP $remote_addr;",
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "proxy_set_header X-Forwarded-Proto $scheme;",
            "ssl_protocols TLSv1.2 TLSv1.3;",
            "access_log off;",
            "daemon off;",
        ] {
            assert!(
                nginx.contains(needle),
                "nginx.conf lacks {needle}:\n{nginx}"
            );
        }

        assert!(
            nginx_on_path(),
            "nginx is not installed: `bash .ci/deps.sh --test` installs it (the generated Nginx config is checked with `nginx -t`)"
        );
        for conf in ["nginx.conf", "backend.conf"] {
            let out = Command::new("nginx")
                .arg("-t")
                .arg("-c")
                .arg(dir.path().join(conf))
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("nginx-t-error.log"))
                .output()
                .unwrap();
            assert!(out.status.success(), "nginx -t {conf}: {}", text(&out));
        }
    }
}
