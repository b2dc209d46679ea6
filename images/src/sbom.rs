//! The image's CycloneDX 1.6 SBOM (JSON): everything a launch measures, described from the bytes
//! that are measured.
//!
//! - the kernel (`vmlinuz`): its SHA-256, the release its bzImage header names, and the Debian
//!   package of `images/kernel.pin` when the bytes are the pinned ones;
//! - the initrd: its SHA-256 and every file in it, each with its SHA-256: busybox (its version
//!   and Debian package as the binary states them), `nacre-enclave` with the crates of its
//!   embedded dependency list ([`crate::deps`]; build-only crates have scope `excluded`), the
//!   kernel modules, `/init` and the measured configuration;
//! - the model the image serves (`machine-learning-model`): not in the image, but its identity
//!   is (the configuration pins it, and the enclave refuses any other model). The identity is a
//!   property, not a hash: it is not the SHA-256 of the file (docs/sealed-format.md).
//!
//! Deterministic: the same image gives the same bytes. There is no timestamp, and the serial
//! number is derived from the rest of the document (an RFC 9562 version 8 UUID holding the first
//! 122 bits of its SHA-256). `nacre image build` writes it beside the image and signs its SHA-256
//! with the reference values (`image.sbom_sha256`).

use aws_lc_rs::digest::{SHA256, digest};
use serde::Serialize;

use crate::cpio::Entry;
use crate::deps::{self, DependencyKind, Source, VersionInfo};

pub const SPEC_VERSION: &str = "1.6";
/// The file `nacre image build` writes beside `vmlinuz`, `initrd` and `cmdline`.
pub const FILE_NAME: &str = "sbom.cdx.json";

/// What the SBOM describes: the boot inputs as built, and the model they are bound to.
#[derive(Debug)]
pub(crate) struct Parts<'a> {
    pub kernel: &'a [u8],
    pub initrd: &'a [u8],
    pub cmdline: &'a str,
    /// The initrd's entries, sorted by path.
    pub entries: &'a [Entry],
    pub tee: &'a str,
    /// The model's name, key id and identity (the sealed header's, as the configuration pins it).
    pub model_name: &'a str,
    pub key_id: &'a str,
    pub model_identity: &'a [u8; 32],
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SbomError {
    #[error("bin/nacre-enclave: {0}")]
    Dependencies(#[from] deps::DepsError),
    #[error("SBOM: {0}")]
    Encode(String),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bom {
    bom_format: &'static str,
    spec_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial_number: Option<String>,
    version: u32,
    metadata: Metadata,
    components: Vec<Component>,
    dependencies: Vec<Dependency>,
}

#[derive(Serialize)]
struct Metadata {
    tools: Tools,
    component: Component,
    properties: Vec<Property>,
}

#[derive(Serialize)]
struct Tools {
    components: Vec<Component>,
}

#[derive(Serialize, Default)]
struct Component {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref", skip_serializing_if = "String::is_empty")]
    bom_ref: String,
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hashes: Vec<Hash>,
    #[serde(skip_serializing_if = "String::is_empty")]
    purl: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    components: Vec<Component>,
}

#[derive(Serialize)]
struct Hash {
    alg: &'static str,
    content: String,
}

#[derive(Serialize)]
struct Property {
    name: &'static str,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Dependency {
    #[serde(rename = "ref")]
    bom_ref: String,
    depends_on: Vec<String>,
}

fn sha256(data: &[u8]) -> Vec<Hash> {
    vec![Hash { alg: "SHA-256", content: hex::encode(digest(&SHA256, data)) }]
}

fn prop(name: &'static str, value: impl Into<String>) -> Property {
    Property { name, value: value.into() }
}

/// Percent-encodes a purl version (RFC 3986 unreserved characters stay).
fn purl_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The kernel release a bzImage names: the setup header's `kernel_version` field (offset 0x20e)
/// points, less 0x200, at a NUL-terminated string (Linux boot protocol 2.00+,
/// Documentation/arch/x86/boot.rst).
fn kernel_release(kernel: &[u8]) -> Option<String> {
    let at = usize::from(u16::from_le_bytes([*kernel.get(0x20e)?, *kernel.get(0x20f)?])) + 0x200;
    let tail = kernel.get(at..)?;
    let text = &tail[..tail.iter().take(256).position(|b| *b == 0)?];
    let text = std::str::from_utf8(text).ok()?.trim();
    (!text.is_empty() && text.chars().all(|c| !c.is_control())).then(|| text.to_owned())
}

/// Busybox's version and, for a Debian build, the Debian package version, from its banner
/// (`BusyBox v1.37.0 (Debian 1:1.37.0-6+b3)`).
fn busybox_version(binary: &[u8]) -> Option<(String, Option<String>)> {
    let marker = b"BusyBox v";
    let at = binary.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let rest = &binary[at..binary.len().min(at + 128)];
    let end = rest.iter().position(|b| *b == 0 || *b == b'\n').unwrap_or(rest.len());
    let banner = std::str::from_utf8(&rest[..end]).ok()?;
    let version = banner.split_whitespace().next()?.to_owned();
    let debian =
        banner.split_once("(Debian ").and_then(|(_, r)| r.split_once(')')).map(|(v, _)| v.to_owned()).filter(
            |v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b".+-~:".contains(&b)),
        );
    Some((version, debian))
}

fn kernel_component(p: &Parts<'_>) -> Component {
    let pin = crate::kernel::pin();
    let vmlinuz = hex::encode(digest(&SHA256, p.kernel));
    let release = kernel_release(p.kernel);
    let mut properties = vec![prop("nacre:measured-as", "vmlinuz")];
    if let Some(r) = &release {
        properties.push(prop("nacre:kernel-release", r.clone()));
    }
    if vmlinuz == pin.vmlinuz_sha256 {
        // The pinned package's bytes: name its package, as Debian's archive does.
        properties.push(prop("nacre:deb-sha256", pin.deb_sha256.clone()));
        properties.push(prop("nacre:deb-path", pin.deb_path.clone()));
        return Component {
            kind: "operating-system",
            bom_ref: "kernel".into(),
            purl: format!("pkg:deb/debian/{}@{}?arch=amd64", pin.package, purl_escape(&pin.version)),
            name: pin.package,
            version: pin.version,
            description: "The guest kernel: Debian's package pinned by images/kernel.pin".into(),
            hashes: sha256(p.kernel),
            properties,
            ..Default::default()
        };
    }
    Component {
        kind: "operating-system",
        bom_ref: "kernel".into(),
        name: "linux".into(),
        version: release.and_then(|r| r.split_whitespace().next().map(str::to_owned)).unwrap_or_default(),
        description: "The guest kernel (not the pinned package: named by its bzImage header)".into(),
        hashes: sha256(p.kernel),
        properties,
        ..Default::default()
    }
}

fn crate_ref(p: &deps::Package) -> String {
    let source: String = p.source.clone().into();
    format!("crate:{source}:{}@{}", p.name, p.version)
}

/// `nacre-enclave` with the crates of its embedded list nested in it, and the list's graph.
fn enclave_component(binary: &[u8], deps_out: &mut Vec<Dependency>) -> Result<Component, SbomError> {
    let info: Option<VersionInfo> = deps::embedded(binary)?;
    let mut c = Component {
        kind: "application",
        bom_ref: "nacre-enclave".into(),
        name: "nacre-enclave".into(),
        hashes: sha256(binary),
        ..Default::default()
    };
    c.properties.push(prop("nacre:path", "bin/nacre-enclave"));
    let Some(info) = info else {
        c.description =
            "The guest runtime. It carries no dependency list (.dep-v0): its crates are unknown".into();
        c.properties.push(prop("nacre:dependency-list", "absent"));
        return Ok(c);
    };
    c.description =
        "The guest runtime; its crates are those of its embedded dependency list (.dep-v0)".into();
    c.properties.push(prop(
        "nacre:dependency-list",
        format!("{} (cargo-auditable format {})", deps::SECTION, info.format),
    ));
    let refs: Vec<String> =
        info.packages.iter().map(|p| if p.root { c.bom_ref.clone() } else { crate_ref(p) }).collect();
    for (i, p) in info.packages.iter().enumerate() {
        if p.root {
            c.version = p.version.to_string();
        } else {
            c.components.push(Component {
                kind: "library",
                bom_ref: refs[i].clone(),
                name: p.name.clone(),
                version: p.version.to_string(),
                // In the binary, or only used to build it (build scripts, proc macros).
                scope: Some(if p.kind == DependencyKind::Build { "excluded" } else { "required" }),
                purl: if p.source == Source::CratesIo {
                    format!("pkg:cargo/{}@{}", p.name, purl_escape(&p.version.to_string()))
                } else {
                    String::new()
                },
                properties: if p.source == Source::CratesIo {
                    Vec::new()
                } else {
                    vec![prop("nacre:crate-source", String::from(p.source.clone()))]
                },
                ..Default::default()
            });
        }
        let mut on: Vec<String> = p.dependencies.iter().map(|d| refs[*d].clone()).collect();
        on.sort();
        on.dedup();
        deps_out.push(Dependency { bom_ref: refs[i].clone(), depends_on: on });
    }
    Ok(c)
}

fn initrd_component(p: &Parts<'_>, deps_out: &mut Vec<Dependency>) -> Result<Component, SbomError> {
    let mut files = Vec::new();
    for e in p.entries {
        let Entry::File { path, data, .. } = e else { continue };
        let c = match path.as_str() {
            "bin/nacre-enclave" => enclave_component(data, deps_out)?,
            "bin/busybox" => {
                let (version, debian) = busybox_version(data).unwrap_or_default();
                Component {
                    kind: "application",
                    bom_ref: "busybox".into(),
                    name: "busybox".into(),
                    purl: debian
                        .as_ref()
                        .map(|v| format!("pkg:deb/debian/busybox-static@{}?arch=amd64", purl_escape(v)))
                        .unwrap_or_default(),
                    version,
                    hashes: sha256(data),
                    properties: vec![prop("nacre:path", "bin/busybox")],
                    ..Default::default()
                }
            }
            _ => Component {
                kind: "file",
                bom_ref: format!("file:{path}"),
                name: path.clone(),
                hashes: sha256(data),
                ..Default::default()
            },
        };
        files.push(c);
    }
    Ok(Component {
        kind: "file",
        bom_ref: "initrd".into(),
        name: "initrd".into(),
        description: "The initrd (newc cpio, uncompressed): every regular file in it is listed".into(),
        hashes: sha256(p.initrd),
        properties: vec![prop("nacre:measured-as", "initrd")],
        components: files,
        ..Default::default()
    })
}

fn model_component(p: &Parts<'_>) -> Component {
    Component {
        kind: "machine-learning-model",
        bom_ref: "model".into(),
        name: p.model_name.to_owned(),
        description: "The sealed model this image serves. Not in the image: its identity is, in \
                      etc/nacre/enclave.toml, and the enclave refuses a model with another. The \
                      identity is not a hash of the file (docs/sealed-format.md, \"The model \
                      identity\"), so it is a property, not a hash"
            .into(),
        properties: vec![
            prop("nacre:model-identity", hex::encode(p.model_identity)),
            prop("nacre:key-id", p.key_id),
        ],
        ..Default::default()
    }
}

/// The SBOM of an image (pretty JSON and a newline).
pub(crate) fn sbom(p: &Parts<'_>) -> Result<Vec<u8>, SbomError> {
    let mut dependencies = Vec::new();
    let kernel = kernel_component(p);
    let initrd = initrd_component(p, &mut dependencies)?;
    let model = model_component(p);
    dependencies.insert(
        0,
        Dependency {
            bom_ref: "image".into(),
            depends_on: vec![kernel.bom_ref.clone(), initrd.bom_ref.clone(), model.bom_ref.clone()],
        },
    );
    let mut bom = Bom {
        bom_format: "CycloneDX",
        spec_version: SPEC_VERSION,
        serial_number: None,
        version: 1,
        metadata: Metadata {
            tools: Tools {
                components: vec![Component {
                    kind: "application",
                    name: "nacre".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    description: "nacre image build".into(),
                    ..Default::default()
                }],
            },
            component: Component {
                kind: "operating-system",
                bom_ref: "image".into(),
                name: "nacre guest image".into(),
                description: "A confidential VM's boot inputs: kernel, initrd and command line, \
                              as measured at launch"
                    .into(),
                ..Default::default()
            },
            properties: vec![prop("nacre:cmdline", p.cmdline), prop("nacre:tee", p.tee)],
        },
        components: vec![kernel, initrd, model],
        dependencies,
    };
    let encode = |b: &Bom| serde_json::to_vec_pretty(b).map_err(|e| SbomError::Encode(e.to_string()));
    let digest = digest(&SHA256, &encode(&bom)?);
    bom.serial_number = Some(uuid_v8(digest.as_ref()));
    let mut out = encode(&bom)?;
    out.push(b'\n');
    Ok(out)
}

/// `urn:uuid:` and an RFC 9562 version 8 UUID: the first 16 bytes of `hash` with the version
/// and variant bits set.
fn uuid_v8(hash: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("urn:uuid:{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn busybox_banner_and_kernel_header_are_read() {
        let bin = b"\x00junk BusyBox v1.37.0 (Debian 1:1.37.0-6+b3) multi-call binary\x00";
        assert_eq!(busybox_version(bin), Some(("1.37.0".into(), Some("1:1.37.0-6+b3".into()))));
        assert_eq!(busybox_version(b"BusyBox v1.36.1 (2024-01-01)\n"), Some(("1.36.1".into(), None)));
        assert_eq!(busybox_version(b"no banner"), None);
        let mut k = vec![0u8; 0x400];
        k[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        k[0x300..0x310].copy_from_slice(b"6.12.117-cloud\0\0");
        assert_eq!(kernel_release(&k).as_deref(), Some("6.12.117-cloud"));
        assert_eq!(kernel_release(&k[..0x300]), None);
        assert_eq!(purl_escape("1:1.37.0-6+b3"), "1%3A1.37.0-6%2Bb3");
    }

    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/cyclonedx.rs"));

    fn list() -> Vec<u8> {
        let json = br#"{"packages":[
            {"name":"nacre-enclave","version":"0.1.0","source":"local","dependencies":[1,2,3],"root":true},
            {"name":"nacre-wire","version":"0.1.0","source":"local"},
            {"name":"serde_derive","version":"1.0.228","source":"crates.io","kind":"build"},
            {"name":"tract-onnx","version":"0.23.9","source":"crates.io","dependencies":[2]}],"format":1}"#;
        miniz_oxide::deflate::compress_to_vec_zlib(json, 7)
    }

    /// A minimal x86-64 ELF executable with one `.dep-v0` section holding `data`.
    fn elf_with_list(data: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.dep-v0\0.shstrtab\0";
        let data_off = 64usize;
        let str_off = data_off + data.len();
        let sh_off = (str_off + shstrtab.len()).div_ceil(8) * 8;
        let mut f = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f.extend_from_slice(&62u16.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&[0; 16]); // entry, phoff
        f.extend_from_slice(&(sh_off as u64).to_le_bytes());
        f.extend_from_slice(&[0; 4]);
        for h in [64u16, 0, 0, 64, 3, 2] {
            f.extend_from_slice(&h.to_le_bytes());
        }
        f.extend_from_slice(data);
        f.extend_from_slice(shstrtab);
        f.resize(sh_off + 64, 0); // section 0: null
        for (name, kind, off, size) in [(1u32, 1u32, data_off, data.len()), (9, 3, str_off, shstrtab.len())] {
            f.extend_from_slice(&name.to_le_bytes());
            f.extend_from_slice(&kind.to_le_bytes());
            f.extend_from_slice(&[0; 16]);
            f.extend_from_slice(&(off as u64).to_le_bytes());
            f.extend_from_slice(&(size as u64).to_le_bytes());
            f.extend_from_slice(&[0; 8]);
            f.extend_from_slice(&1u64.to_le_bytes());
            f.extend_from_slice(&[0; 8]);
        }
        f
    }

    fn parts_sbom(enclave: &[u8], model_identity: &[u8; 32]) -> Vec<u8> {
        let entries = [
            Entry::Dir { path: "bin".into(), mode: 0o755 },
            Entry::File {
                path: "bin/busybox".into(),
                mode: 0o755,
                data: b"BusyBox v1.37.0 (Debian 1:1.37.0-6+b3)\0".to_vec(),
            },
            Entry::File { path: "bin/nacre-enclave".into(), mode: 0o755, data: enclave.to_vec() },
            Entry::Symlink { path: "bin/sh".into(), target: "busybox".into() },
            Entry::File { path: "init".into(), mode: 0o755, data: b"#!/bin/sh\n".to_vec() },
        ];
        let mut kernel = vec![0u8; 0x400];
        kernel[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        kernel[0x300..0x30f].copy_from_slice(b"6.12.117-cloud ");
        sbom(&Parts {
            kernel: &kernel,
            initrd: b"070701",
            cmdline: "console=ttyS0",
            entries: &entries,
            tee: "sim",
            model_name: "fraud-mlp",
            key_id: "fraud-mlp",
            model_identity,
        })
        .unwrap()
    }

    #[test]
    fn the_sbom_is_valid_cyclonedx_and_lists_the_crates_the_enclave_embeds() {
        let enclave = elf_with_list(&list());
        let bytes = parts_sbom(&enclave, &[0xab; 32]);
        validate_cyclonedx(&bytes);
        assert_eq!(bytes, parts_sbom(&enclave, &[0xab; 32]), "deterministic");
        let bom: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(bom["specVersion"], "1.6");
        let initrd = &bom["components"][1];
        let enclave_c =
            initrd["components"].as_array().unwrap().iter().find(|c| c["name"] == "nacre-enclave").unwrap();
        assert_eq!(enclave_c["version"], "0.1.0");
        assert_eq!(enclave_c["hashes"][0]["content"], hex::encode(digest(&SHA256, &enclave)));
        let crates = enclave_c["components"].as_array().unwrap();
        let names: Vec<&str> = crates.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["nacre-wire", "serde_derive", "tract-onnx"]);
        assert_eq!(crates[2]["purl"], "pkg:cargo/tract-onnx@0.23.9");
        assert_eq!(crates[1]["scope"], "excluded");
        assert_eq!(crates[0]["properties"][0]["value"], "local");
        let busybox =
            initrd["components"].as_array().unwrap().iter().find(|c| c["name"] == "busybox").unwrap();
        assert_eq!(busybox["purl"], "pkg:deb/debian/busybox-static@1%3A1.37.0-6%2Bb3?arch=amd64");
        assert_eq!(bom["components"][0]["version"], "6.12.117-cloud");
        let model_c = &bom["components"][2];
        assert_eq!(model_c["type"], "machine-learning-model");
        assert_eq!(model_c["properties"][0]["name"], "nacre:model-identity");
        assert_eq!(model_c["properties"][0]["value"], "ab".repeat(32));
        assert!(model_c.get("hashes").is_none());
        // The graph: every ref a component's, the enclave depending on its direct crates.
        let deps = bom["dependencies"].as_array().unwrap();
        let enclave_deps = deps.iter().find(|d| d["ref"] == "nacre-enclave").unwrap();
        assert_eq!(enclave_deps["dependsOn"].as_array().unwrap().len(), 3);
        // Another model, another document and serial number.
        let mut other = [0xab; 32];
        other[0] = 0;
        let other: serde_json::Value = serde_json::from_slice(&parts_sbom(&enclave, &other)).unwrap();
        assert_ne!(other["serialNumber"], bom["serialNumber"]);
    }

    /// A binary without the list is still described (its hash), and says its crates are unknown.
    #[test]
    fn an_enclave_without_a_list_is_described_as_such() {
        let mut elf = elf_with_list(b"")[..0x40].to_vec();
        elf[40..48].fill(0); // e_shoff
        elf[60..64].fill(0); // e_shnum, e_shstrndx
        let bytes = parts_sbom(&elf, &[0xab; 32]);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"value\": \"absent\""), "{text}");
    }

    #[test]
    fn serial_number_is_a_version_8_uuid() {
        let u = uuid_v8(&[0xff; 32]);
        assert_eq!(u, "urn:uuid:ffffffff-ffff-8fff-bfff-ffffffffffff");
    }
}
