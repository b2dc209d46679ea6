/// Validates `bom` against the official CycloneDX 1.6 JSON schema with Python's `jsonschema`
/// (images/tests/data/cyclonedx/validate.py, beside the vendored schema). Shared by the SBOM's
/// unit tests (`include!`) and the image build tests.
pub fn validate_cyclonedx(bom: &[u8]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cyclonedx/validate.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), bom).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not a valid CycloneDX 1.6 BOM (python3 with jsonschema needed):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
