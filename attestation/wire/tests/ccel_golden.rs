//! Golden replay: published CCEL logs replay to their published RTMRs byte for byte
//! (provenance in `tests/data/ccel/PROVENANCE.md`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use nacre_wire::ccel::{EventLog, event_type};

fn read(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/ccel/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).expect(&path)
}

fn rtmrs(hex_values: [&str; 4]) -> [[u8; 48]; 4] {
    hex_values.map(|h| {
        let mut out = [0u8; 48];
        hex::decode_to_slice(h, &mut out).unwrap();
        out
    })
}

const ZERO: &str =
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn td_shim_log_replays_to_the_published_rtmrs() {
    let area = read("CCEL_data");
    let log = EventLog::parse(&area).unwrap();
    assert_eq!(log.spec_id.vendor_info, b"td-shim");
    assert_eq!((log.events.len(), log.bytes().len()), (5, 9822));
    assert_eq!(
        log.replay(),
        rtmrs([
            "2dc712306a963eadb894ad47dbaa17df44814151555aee11cbb843becca88950ffd079664902e6f22c66f7c8213543f4",
            "0fa3be56af61208bbd179dc7b124988eb929319154663c539d6f46445ecac2fec287075047ff7bd1922829fec28cd3cf",
            ZERO,
            ZERO,
        ])
    );
    // What an attester sends (the log without its padding) is the same log.
    assert_eq!(EventLog::parse(log.bytes()).unwrap(), log);
    let described: Vec<_> = log.events.iter().map(|e| e.description()).collect();
    assert_eq!(described[0].as_deref(), Some("td_hob"));
    assert_eq!(described[1].as_deref(), Some("separator"));
    assert_eq!(described[3].as_deref(), Some("td_payload"));
}

#[test]
fn tdvf_log_replays_to_the_published_rtmrs() {
    let area = read("CCEL_data_ovmf");
    let log = EventLog::parse(&area).unwrap();
    assert_eq!((log.events.len(), log.bytes().len()), (20, 2120));
    assert_eq!(
        log.replay(),
        rtmrs([
            "8566f998798db09443b244c62de9a3041fb02e2e6936c4396d784bba2e90177329ec5aba3bb484404f2ab9cc90abe193",
            "775b9f6bfe99f8a31396f0d0218e67ffa796d3b96ccf961cbb0deba48c79c00f082cda1a5567c1c16305f1fc210c13c6",
            "94eaf7a7bf398ed8d888c91057ae0261802e4f3df084213a76ca7f0b5055ac9d2241de43cd58d9e8b49c503bbf25f34a",
            ZERO,
        ])
    );
    let e = &log.events;
    assert_eq!(
        e[2].description().as_deref(),
        Some("SecureBoot (8be4df61-93ca-11d2-aa0d-00e098032b8c, 0 bytes)")
    );
    assert_eq!(e[8].description().as_deref(), Some("ACPI DATA"));
    assert_eq!(e[11].description(), None); // the kernel: a device path
    assert_eq!(e[14].description().as_deref(), Some("Calling EFI Application from Boot Option"));
    assert_eq!(e[19].description().as_deref(), Some("Exit Boot Services Returned with Success"));
    assert_eq!(e[19].event_type, event_type::EV_EFI_ACTION);
    // The EFI actions, variables and separators are hashes of their data; the ACPI tables'
    // label and the kernel's device path are not what was hashed.
    assert!(e[14].data_is_digested() && e[7].data_is_digested() && e[2].data_is_digested());
    assert!(!e[8].data_is_digested() && !e[11].data_is_digested());
}

/// One changed byte in one digest changes that register's replay, and only that one.
#[test]
fn a_changed_digest_changes_its_register_only() {
    let mut area = read("CCEL_data_ovmf");
    let good = EventLog::parse(&area).unwrap().replay();
    let kernel = EventLog::parse(&area).unwrap().events[11].clone();
    assert_eq!(kernel.rtmr(), Some(1));
    let at = kernel.offset + 12 + 2; // mr_index, type, count, alg
    drop(kernel);
    area[at] ^= 1;
    let bad = EventLog::parse(&area).unwrap().replay();
    assert_ne!(bad[1], good[1]);
    assert_eq!((bad[0], bad[2], bad[3]), (good[0], good[2], good[3]));
}
