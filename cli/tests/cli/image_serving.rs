//! `nacre image build`'s serving options (issue 14, bounded requests): the inference token's
//! hash and the limits go into the measured `enclave.toml`, which the static `nacre-enclave`
//! (the binary the image carries) parses; values the enclave would refuse at boot, and bad
//! token files, fail the build with the reason and write nothing.

#[path = "../../../images/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sha2::Digest;

fn nacre(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nacre")).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The static `nacre-enclave` as images carry it (built once, cached by scripts/build-enclave.sh).
fn enclave() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-enclave.sh");
    let out = Command::new("bash").arg(script).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// What every build of these tests shares: a sealed sample model, a signing key, a CA file.
struct Inputs {
    dir: PathBuf,
    sealed: String,
    signing_key: String,
    ca: String,
}

fn inputs(name: &str) -> Inputs {
    let dir = common::scratch(name);
    let model = dir.join("mlp.onnx").display().to_string();
    let sealed = dir.join("mlp.sealed").display().to_string();
    let key = dir.join("mlp.key").display().to_string();
    assert!(nacre(&["model", "sample", "--out", &model]).status.success());
    let out = nacre(&["seal", &model, "--out", &sealed, "--key-out", &key, "--name", "mlp"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let signing_key = dir.join("signing.key").display().to_string();
    assert!(nacre(&["image", "keygen", "--out", &signing_key]).status.success());
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    Inputs { sealed, signing_key, ca: ca.display().to_string(), dir }
}

/// `nacre image build` into `out` with `enclave` and the serving flags `extra`.
fn build(i: &Inputs, out: &Path, enclave: &Path, extra: &[&str]) -> Output {
    let (kernel, modules, seabios) = (
        common::input("NACRE_KERNEL").display().to_string(),
        common::input("NACRE_KERNEL_MODULES").display().to_string(),
        common::input("NACRE_SEABIOS").display().to_string(),
    );
    let (out, enclave) = (out.display().to_string(), enclave.display().to_string());
    let mut args = vec![
        "image",
        "build",
        "--out",
        &out,
        "--name",
        "serving",
        "--kernel",
        &kernel,
        "--modules",
        &modules,
        "--enclave",
        &enclave,
        "--service-url",
        "https://10.0.2.100:8443",
        "--service-ca",
        &i.ca,
        "--sealed",
        &i.sealed,
        "--signing-key",
        &i.signing_key,
        "--sim-firmware",
        &seabios,
    ];
    args.extend_from_slice(extra);
    nacre(&args)
}

/// `etc/nacre/enclave.toml` of the initrd in `image` (read back with GNU cpio).
fn enclave_toml(image: &Path) -> String {
    let out = image.join("x");
    std::fs::create_dir_all(&out).unwrap();
    let mut child = Command::new("cpio")
        .args(["-i", "--quiet", "--no-absolute-filenames", "--make-directories", "etc/nacre/enclave.toml"])
        .current_dir(&out)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &std::fs::read(image.join("initrd")).unwrap())
        .unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(out.join("etc/nacre/enclave.toml")).unwrap()
}

/// Starts `enclave` on `config` (listening on a free loopback port instead of the image's
/// 0.0.0.0:8443): `Ok` once its configuration parsed and its server is listening, `Err` with
/// the enclave's refusal otherwise. It is stopped either way (outside a guest it could never
/// attest).
fn enclave_accepts(enclave: &Path, dir: &Path, config: &str) -> Result<(), String> {
    let path = dir.join("enclave.toml");
    std::fs::write(&path, format!("{config}listen = \"127.0.0.1:0\"\n")).unwrap();
    let mut child = Command::new(enclave)
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("NACRE-ENCLAVE-LISTENING") || line.starts_with("NACRE-ENCLAVE-FAILED") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    match line {
        Ok(l) if l.starts_with("NACRE-ENCLAVE-LISTENING") => Ok(()),
        Ok(l) => Err(l),
        Err(e) => panic!("nacre-enclave said neither LISTENING nor FAILED: {e}"),
    }
}

/// The lines `nacre image build` writes for a sealed model named `mlp`, before any serving key.
fn base_config(sealed_digest: &str) -> String {
    format!(
        "# Measured: part of the initrd.\n\
         service_url = \"https://10.0.2.100:8443\"\n\
         service_ca = \"/etc/nacre/service-ca.pem\"\n\
         tee = \"sim\"\n\
         key_id = \"mlp\"\n\
         model_name = \"mlp\"\n\
         model_identity = \"{sealed_digest}\"\n"
    )
}

#[test]
fn a_token_and_limits_reach_the_enclave_as_built() {
    let i = inputs("image-serving");
    let enclave = enclave();
    let token = "s3cret-Token_0123456789.abcdefghij";
    let token_file = i.dir.join("inference.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let token_sha256 = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    // `nacre model digest` computes, from the plaintext alone, the identity sealing put in the
    // header (and the image measured): the built configuration must state it.
    let digest = nacre(&["model", "digest", "--hex", &i.dir.join("mlp.onnx").display().to_string()]);
    assert!(digest.status.success(), "{}", stderr(&digest));
    let model_identity = String::from_utf8(digest.stdout).unwrap().trim().to_owned();
    assert_eq!(model_identity.len(), 64);

    let image = i.dir.join("image");
    let out = build(
        &i,
        &image,
        &enclave,
        &[
            "--inference-token-file",
            token_file.to_str().unwrap(),
            "--max-request-bytes",
            "2097152",
            "--rate-per-second",
            "5",
            "--rate-burst",
            "20",
            "--max-connections",
            "40",
            "--connections-per-source",
            "4",
            "--max-buffered-bytes",
            "8388608",
            "--request-timeout-secs",
            "15",
            "--idle-timeout-secs",
            "45",
            "--allow-non-finite",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = stderr(&out);
    assert!(
        summary.contains(&format!("inference requires a bearer token (SHA-256 {token_sha256})")),
        "{summary}"
    );
    assert!(
        summary.contains("max_request_bytes 2097152") && summary.contains("allow_non_finite"),
        "{summary}"
    );
    let config = enclave_toml(&image);
    assert_eq!(
        config,
        format!(
            "{}inference_token_sha256 = \"{token_sha256}\"\n\
             max_request_bytes = 2097152\n\
             rate_per_second = 5\n\
             rate_burst = 20\n\
             max_connections = 40\n\
             connections_per_source = 4\n\
             max_buffered_bytes = 8388608\n\
             request_timeout_secs = 15\n\
             idle_timeout_secs = 45\n\
             allow_non_finite = true\n",
            base_config(&model_identity)
        )
    );
    assert!(!config.contains(token), "the token itself never enters the image");
    assert!(
        !std::fs::read(image.join("initrd")).unwrap().windows(token.len()).any(|w| w == token.as_bytes()),
        "the token itself never enters the image"
    );
    enclave_accepts(&enclave, &i.dir, &config).unwrap();

    // The same token given by its hash: the same image, byte for byte.
    let by_hash = i.dir.join("image-by-hash");
    let out = build(
        &i,
        &by_hash,
        &enclave,
        &[
            "--inference-token-sha256",
            &token_sha256,
            "--max-request-bytes",
            "2097152",
            "--rate-per-second",
            "5",
            "--rate-burst",
            "20",
            "--max-connections",
            "40",
            "--connections-per-source",
            "4",
            "--max-buffered-bytes",
            "8388608",
            "--request-timeout-secs",
            "15",
            "--idle-timeout-secs",
            "45",
            "--allow-non-finite",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(by_hash.join("initrd")).unwrap(), std::fs::read(image.join("initrd")).unwrap());

    // No option: the configuration is the model's alone, and the summary says so.
    let plain = i.dir.join("image-plain");
    let out = build(&i, &plain, &enclave, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("inference requires NO token"), "{}", stderr(&out));
    let base = enclave_toml(&plain);
    assert_eq!(base, base_config(&model_identity));

    // The builder judges a lone limit against the enclave's default of its counterpart (256
    // connections, 16 MiB requests): these edges pass both, one step further fails both. The
    // enclave's own verdicts pin the defaults the builder assumes.
    let edges = i.dir.join("image-edges");
    let out =
        build(&i, &edges, &enclave, &["--connections-per-source", "256", "--max-buffered-bytes", "1048576"]);
    assert!(out.status.success(), "{}", stderr(&out));
    enclave_accepts(&enclave, &i.dir, &enclave_toml(&edges)).unwrap();
    for (line, flags) in [
        ("connections_per_source = 257\n", ["--connections-per-source", "257"]),
        ("max_buffered_bytes = 1048575\n", ["--max-buffered-bytes", "1048575"]),
        ("max_connections = 63\n", ["--max-connections", "63"]),
    ] {
        let refused = enclave_accepts(&enclave, &i.dir, &format!("{base}{line}")).unwrap_err();
        assert!(
            refused.starts_with("NACRE-ENCLAVE-FAILED") && refused.contains("configuration"),
            "{refused}"
        );
        let out = build(&i, &i.dir.join("never"), &enclave, &flags);
        assert_eq!(out.status.code(), Some(2), "{line}: {}", stderr(&out));
    }
    assert!(!i.dir.join("never").exists());
}

/// Issue 14: a bad token file or a limit the enclave would refuse at boot fails `nacre image
/// build` with the reason, before anything is written; `nacre infer` reads a token file the
/// same way.
#[test]
fn bad_serving_options_fail_the_build_with_the_reason() {
    let i = inputs("image-serving-bad");
    let file = |name: &str, bytes: &[u8]| {
        let p = i.dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let short = file("short.token", b"0123456789abcde\n");
    let empty = file("empty.token", b"");
    let spaced = file("spaced.token", b"0123456789 abcdef\n");
    let out_dir = i.dir.join("out");
    // Any static binary does as the enclave: these builds stop before it matters.
    let busybox = Path::new("/bin/busybox");
    // Usage errors and refused inputs alike exit 2.
    let cases: &[(&[&str], &str)] = &[
        (&["--inference-token-file", &short], "15 bytes; a token is at least 16"),
        (&["--inference-token-file", &empty], "the token file is empty"),
        (&["--inference-token-file", &spaced], "printable ASCII without spaces"),
        (&["--inference-token-file", "/nonexistent/token"], "reading the token file /nonexistent/token"),
        (&["--inference-token-sha256", "abcd"], "64 hex digits"),
        (
            &["--max-connections", "100", "--connections-per-source", "300"],
            "connections_per_source: 300 is more than max_connections (100)",
        ),
        (
            &["--connections-per-source", "300"],
            "300 is more than max_connections (256, the enclave's default)",
        ),
        (&["--max-connections", "0"], "must be positive"),
        (&["--rate-burst", "0"], "rate_per_second, rate_burst: must be positive"),
        (&["--rate-per-second", "5.5"], "invalid value"),
        (
            &["--max-request-bytes", "4096", "--max-buffered-bytes", "4095"],
            "max_buffered_bytes: 4095 is less",
        ),
        (&["--request-timeout-secs", "0"], "request_timeout_secs: 0: 1–600 seconds"),
        (&["--idle-timeout-secs", "601"], "idle_timeout_secs: 601: 1–600 seconds"),
        (&["--max-request-bytes", "18446744073709551615"], "more than a TOML integer holds"),
    ];
    for (flags, reason) in cases {
        let out = build(&i, &out_dir, busybox, flags);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {e}");
        assert!(e.contains(reason), "{flags:?}: {e} should mention {reason:?}");
        assert!(!out_dir.exists(), "{flags:?}: nothing is written");
    }
    // `nacre infer` refuses the same file before it reads anything else or connects.
    let out = nacre(&[
        "infer",
        "https://127.0.0.1:1",
        "--policy",
        "/nonexistent/policy.toml",
        "--model",
        "mlp",
        "--input",
        "/nonexistent/request.json",
        "--token-file",
        &short,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("15 bytes; a token is at least 16"), "{}", stderr(&out));
}
