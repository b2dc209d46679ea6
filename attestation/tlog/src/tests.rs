use super::*;
use crate::checkpoint::{open_checkpoint, sign_checkpoint};
use crate::tree::{
    HashTile, leaf_hash, prove_consistency, prove_inclusion, root, tiles_at_level, verify_consistency,
    verify_inclusion,
};
use crate::witness::{AddCheckpoint, Refusal, Witness};
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use sha2_011::Sha256 as Sha256v11;

fn leaf(i: u64) -> Vec<u8> {
    format!("leaf number {i} {}", "x".repeat((i % 7) as usize)).into_bytes()
}

fn trees(n: u64) -> (MemoryTree, MemoryBackedTree<Sha256v11, Vec<u8>>) {
    let mut ours = MemoryTree::new();
    let mut theirs = MemoryBackedTree::new();
    for i in 0..n {
        assert_eq!(ours.append(&leaf(i)).unwrap(), i);
        theirs.push(leaf(i));
    }
    (ours, theirs)
}

fn bytes_of(proof: &[Hash]) -> Vec<u8> {
    proof.iter().flat_map(|h| h.0).collect()
}

fn hashes_of(bytes: &[u8]) -> Vec<Hash> {
    bytes.chunks(32).map(|c| Hash(c.try_into().unwrap())).collect()
}

fn root_of(t: &MemoryBackedTree<Sha256v11, Vec<u8>>) -> [u8; 32] {
    t.root().as_bytes().as_slice().try_into().unwrap()
}

#[test]
fn roots_and_proofs_match_a_second_rfc6962_implementation() {
    let (ours, _) = trees(0);
    assert_eq!(ours.root().unwrap(), tlog_tiles::EMPTY_HASH);
    for n in 1..=70u64 {
        let (ours, theirs) = trees(n);
        let r = ours.root().unwrap();
        assert_eq!(r.0, root_of(&theirs), "root of {n}");
        let their_root = theirs.root();
        for i in 0..n {
            // Ours verified by theirs, theirs verified by ours.
            let p = prove_inclusion(&ours, n, i).unwrap();
            let as_theirs = InclusionProof::<Sha256v11>::try_from_bytes(bytes_of(&p)).unwrap();
            their_root.verify_inclusion(&leaf(i), i, &as_theirs).unwrap();
            let theirs_p = theirs.prove_inclusion(i as usize);
            assert_eq!(theirs_p.as_bytes(), bytes_of(&p).as_slice(), "inclusion {i} of {n}");
            verify_inclusion(&hashes_of(theirs_p.as_bytes()), n, r, i, leaf_hash(&leaf(i))).unwrap();
        }
        for old in 1..n {
            let p = prove_consistency(&ours, old, n).unwrap();
            let theirs_p = theirs.prove_consistency((n - old) as usize);
            assert_eq!(theirs_p.as_bytes(), bytes_of(&p).as_slice(), "consistency {old}->{n}");
            let old_root = root(&ours, old).unwrap();
            let their_old = RootHash::<Sha256v11>::new(old_root.0.into(), old);
            let as_theirs = ConsistencyProof::<Sha256v11>::try_from_bytes(bytes_of(&p)).unwrap();
            their_root.verify_consistency(&their_old, &as_theirs).unwrap();
            verify_consistency(&p, old, old_root, n, r).unwrap();
        }
    }
}

#[test]
fn tampered_inclusion_proofs_are_refused() {
    let (ours, _) = trees(37);
    let r = ours.root().unwrap();
    let i = 21;
    let good = prove_inclusion(&ours, 37, i).unwrap();
    let h = leaf_hash(&leaf(i));
    verify_inclusion(&good, 37, r, i, h).unwrap();
    for k in 0..good.len() {
        let mut bad = good.clone();
        bad[k].0[k % 32] ^= 1;
        assert!(matches!(verify_inclusion(&bad, 37, r, i, h), Err(TlogError::InclusionProof)));
    }
    let mut short = good.clone();
    short.pop();
    assert!(verify_inclusion(&short, 37, r, i, h).is_err());
    let mut long = good.clone();
    long.push(r);
    assert!(verify_inclusion(&long, 37, r, i, h).is_err());
    assert!(verify_inclusion(&good, 37, r, i + 1, h).is_err(), "wrong index");
    assert!(verify_inclusion(&good, 37, r, i, leaf_hash(b"other")).is_err(), "wrong leaf");
    assert!(matches!(verify_inclusion(&good, 37, r, 37, h), Err(TlogError::Range(_))));
}

#[test]
fn tampered_consistency_proofs_are_refused() {
    let (ours, _) = trees(45);
    let (old, new) = (13, 45);
    let good = prove_consistency(&ours, old, new).unwrap();
    let (ro, rn) = (root(&ours, old).unwrap(), ours.root().unwrap());
    verify_consistency(&good, old, ro, new, rn).unwrap();
    for k in 0..good.len() {
        let mut bad = good.clone();
        bad[k].0[31] ^= 0x80;
        assert!(matches!(verify_consistency(&bad, old, ro, new, rn), Err(TlogError::ConsistencyProof)));
    }
    // A forked history: the same sizes, one leaf changed.
    let mut forked = MemoryTree::new();
    for i in 0..new {
        forked.append(&if i == 5 { b"evil".to_vec() } else { leaf(i) }).unwrap();
    }
    let fork_root = forked.root().unwrap();
    assert!(verify_consistency(&good, old, ro, new, fork_root).is_err());
    let fork_proof = prove_consistency(&forked, old, new).unwrap();
    assert!(verify_consistency(&fork_proof, old, ro, new, fork_root).is_err(), "old root differs");
    assert!(matches!(verify_consistency(&[], new, rn, new, fork_root), Err(TlogError::Fork { .. })));
    assert!(matches!(verify_consistency(&good, new, rn, old, ro), Err(TlogError::Rollback { .. })));
}

fn log_signer() -> NoteSigner {
    NoteSigner::from_seed("nacre.test/release-log", KeyKind::Checkpoint, &[7; 32]).unwrap()
}

fn witness_signer(i: u8) -> NoteSigner {
    NoteSigner::from_seed(&format!("witness.test/w{i}"), KeyKind::Cosignature, &[100 + i; 32]).unwrap()
}

#[test]
fn note_keys_round_trip_and_parse_strictly() {
    let log = log_signer();
    let vkey = log.public().vkey();
    assert_eq!(&NoteKey::parse(&vkey).unwrap(), log.public());
    // signed_note's own parser agrees on the checkpoint key's id and encoding.
    signed_note::StandardVerifier::new(&vkey).unwrap();
    let w = witness_signer(1).public().vkey();
    assert_eq!(NoteKey::parse(&w).unwrap().kind(), KeyKind::Cosignature);
    let (name, rest) = vkey.split_once('+').unwrap();
    for bad in [
        format!("other+{rest}"),
        format!("{name}+00000000+{}", rest.split_once('+').unwrap().1),
        format!("{name}+{}", rest.replace('+', "")),
        "a b+01020304+AQ==".to_owned(),
        String::new(),
    ] {
        assert!(NoteKey::parse(&bad).is_err(), "{bad}");
    }
    assert!(format!("{:?}", log).contains("public"));
    assert!(!format!("{:?}", log).contains("secret"));
}

fn signed(tree: &MemoryTree) -> Vec<u8> {
    sign_checkpoint(&log_signer(), tree.size_hint(), tree.root().unwrap()).unwrap()
}

trait SizeHint {
    fn size_hint(&self) -> u64;
}
impl SizeHint for MemoryTree {
    fn size_hint(&self) -> u64 {
        tree::HashStore::size(self)
    }
}

#[test]
fn checkpoints_verify_under_the_log_key_only() {
    let (tree, _) = trees(10);
    let note = signed(&tree);
    let text = String::from_utf8(note.clone()).unwrap();
    assert!(text.starts_with("nacre.test/release-log\n10\n"), "{text}");
    assert!(text.contains("\n\n\u{2014} nacre.test/release-log "), "{text}");
    let log = log_signer().public().clone();
    let opened = open_checkpoint(&note, &log, &[]).unwrap();
    assert_eq!((opened.size(), opened.root()), (10, tree.root().unwrap()));

    let other = NoteSigner::from_seed("nacre.test/release-log", KeyKind::Checkpoint, &[8; 32]).unwrap();
    assert!(open_checkpoint(&note, other.public(), &[]).is_err(), "another key of the same name");
    let mut tampered = note.clone();
    tampered[text.find("\n10\n").unwrap() + 2] = b'1'; // size 10 -> 11
    assert!(open_checkpoint(&tampered, &log, &[]).is_err());
    let elsewhere = NoteSigner::from_seed("other.test/log", KeyKind::Checkpoint, &[7; 32]).unwrap();
    let foreign = sign_checkpoint(&elsewhere, 10, tree.root().unwrap()).unwrap();
    assert!(open_checkpoint(&foreign, &log, &[]).is_err());
}

#[test]
fn cosignatures_count_only_named_witnesses() {
    let (tree, _) = trees(5);
    let note = signed(&tree);
    let log = log_signer().public().clone();
    let mut opened = open_checkpoint(&note, &log, &[]).unwrap();
    let (w1, w2, w3) = (witness_signer(1), witness_signer(2), witness_signer(3));
    let named = [w1.public().clone(), w2.public().clone()];
    let now = 1_700_000_000;
    for w in [&w1, &w2] {
        let line = cosign::cosign(w, opened.text(), now).unwrap();
        opened.add_cosignatures(&line, &named).unwrap();
    }
    // A third, unnamed witness's line in the note is ignored, not counted.
    let mut bytes = opened.to_bytes();
    bytes.extend(cosign::cosign(&w3, opened.text(), now).unwrap());
    let reopened = open_checkpoint(&bytes, &log, &named).unwrap();
    assert_eq!(reopened.cosigned().len(), 2);
    reopened.require_cosigners(2, now, 60).unwrap();
    let err = reopened.require_cosigners(3, now, 60).unwrap_err();
    assert!(err.to_string().contains("3 witness cosignatures needed, 2 verified"), "{err}");
    // Only one of the two named: K = 2 fails.
    let one = open_checkpoint(&bytes, &log, &named[..1]).unwrap();
    assert!(matches!(one.require_cosigners(2, now, 60), Err(TlogError::NotEnoughCosignatures { .. })));
    // A cosignature from the future.
    assert!(matches!(
        reopened.require_cosigners(2, now - 3600, 60),
        Err(TlogError::CosignatureFromFuture { .. })
    ));
    // A cosignature over another checkpoint does not verify.
    let (tree6, _) = trees(6);
    let other = open_checkpoint(&signed(&tree6), &log, &[]).unwrap();
    let wrong = cosign::cosign(&w1, other.text(), now).unwrap();
    let mut forged = note.clone();
    forged.extend(wrong);
    assert!(open_checkpoint(&forged, &log, &named).is_err());
    // A log key can't cosign and a witness key can't sign checkpoints.
    assert!(cosign::cosign(&log_signer(), opened.text(), now).is_err());
    assert!(sign_checkpoint(&w1, 5, tree.root().unwrap()).is_err());
}

fn temp_state(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nacre-tlog-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("witness.json")
}

fn add(tree: &MemoryTree, old: u64, note: &[u8]) -> Vec<u8> {
    let proof = prove_consistency(tree, old, tree.size_hint()).unwrap();
    AddCheckpoint { old_size: old, proof, checkpoint: note.to_vec() }.encode()
}

#[test]
fn the_witness_cosigns_growth_and_refuses_forks_and_rollbacks() {
    let path = temp_state("witness");
    let log = log_signer().public().clone();
    let w = Witness::open(witness_signer(1), vec![log.clone()], &path).unwrap();
    let (t10, _) = trees(10);
    let (t25, _) = trees(25);
    let now = 1_700_000_000;

    let line = w.add_checkpoint(&add(&t10, 0, &signed(&t10)), now).unwrap();
    let mut opened = open_checkpoint(&signed(&t10), &log, &[]).unwrap();
    opened.add_cosignatures(&line, &[w.key().clone()]).unwrap();
    assert_eq!(opened.cosigned().get("witness.test/w1"), Some(&now));

    // Old size must match what the witness holds: 409 with its size.
    let err = w.add_checkpoint(&add(&t25, 0, &signed(&t25)), now).unwrap_err();
    assert_eq!((err.status(), err.latest_size()), (409, Some(10)));
    w.add_checkpoint(&add(&t25, 10, &signed(&t25)), now + 1).unwrap();

    // Rollback: a smaller tree.
    let err = w.add_checkpoint(&add(&t10, 0, &signed(&t10)), now).unwrap_err();
    assert!(matches!(err, Refusal::Rollback { size: 10, latest: 25 }), "{err}");
    assert!(err.to_string().contains("rollback refused"));
    // Fork: the same size, another root.
    let mut fork = MemoryTree::new();
    for i in 0..25 {
        fork.append(&if i == 3 { b"evil".to_vec() } else { leaf(i) }).unwrap();
    }
    let err = w.add_checkpoint(&add(&fork, 25, &signed(&fork)), now).unwrap_err();
    assert!(matches!(err, Refusal::Fork { size: 25 }), "{err}");
    assert_eq!(err.status(), 409);
    // A forked history that grew: its consistency proof from 25 does not verify.
    let mut fork40 = fork.clone();
    for i in 25..40 {
        fork40.append(&leaf(i)).unwrap();
    }
    let err = w.add_checkpoint(&add(&fork40, 25, &signed(&fork40)), now).unwrap_err();
    assert_eq!(err, Refusal::BadProof { old: 25, size: 40 });
    assert_eq!(err.status(), 422);
    // Unknown origin and unsigned checkpoints.
    let stranger = NoteSigner::from_seed("other.test/log", KeyKind::Checkpoint, &[9; 32]).unwrap();
    let err = w
        .add_checkpoint(&add(&t25, 25, &sign_checkpoint(&stranger, 25, t25.root().unwrap()).unwrap()), now)
        .unwrap_err();
    assert_eq!(err.status(), 404);
    let impostor = NoteSigner::from_seed("nacre.test/release-log", KeyKind::Checkpoint, &[9; 32]).unwrap();
    let err = w
        .add_checkpoint(&add(&t25, 25, &sign_checkpoint(&impostor, 25, t25.root().unwrap()).unwrap()), now)
        .unwrap_err();
    assert_eq!(err.status(), 403);
    // Malformed bodies.
    for body in [&b"old 01\n\n"[..], b"new 1\n\n", b"old 5\nnot base64!\n\n", b"old 0\n"] {
        assert_eq!(w.add_checkpoint(body, now).unwrap_err().status(), 400, "{body:?}");
    }
    let body = AddCheckpoint { old_size: 30, proof: vec![], checkpoint: signed(&t25) }.encode();
    let err = w.add_checkpoint(&body, now).unwrap_err();
    assert_eq!(err.status(), 400, "old above size: {err}");

    // The state is durable: a restarted witness still refuses the rollback, and a state file
    // can't be taken over by another witness key.
    drop(w);
    let w = Witness::open(witness_signer(1), vec![log.clone()], &path).unwrap();
    assert_eq!(w.latest("nacre.test/release-log").unwrap().size, 25);
    assert!(matches!(w.add_checkpoint(&add(&t10, 0, &signed(&t10)), now), Err(Refusal::Rollback { .. })));
    assert!(Witness::open(witness_signer(2), vec![log], &path).is_err());
}

#[test]
fn entries_have_one_encoding() {
    let e = Entry {
        v: 1,
        time_ms: 1_700_000_000_000,
        action: Action::Release,
        actor: "guest".into(),
        key_id: Some("fraud-model".into()),
        key_version: Some(2),
        decision: "allow".into(),
        reason: None,
        tee: Some("snp".into()),
        measurement: Some("ab".repeat(48)),
        chip_id_hmac: Some("01".repeat(32)),
        policy_sha256: Some("02".repeat(32)),
        reference_values_sha256: Some("03".repeat(32)),
        release_key_sha256: Some("04".repeat(32)),
        legacy_chain_head: None,
        reference_measurements: None,
    };
    let bytes = e.encode().unwrap();
    assert_eq!(Entry::decode(&bytes).unwrap(), e);
    let text = String::from_utf8(bytes.clone()).unwrap();
    for bad in [
        text.replace(",\"actor\"", ", \"actor\""),
        text.replace("}", ",\"extra\":1}"),
        text.replace("\"v\":1,\"time_ms\":1700000000000", "\"time_ms\":1700000000000,\"v\":1"),
        text.replace("\"reason\":null,", ""),
        text.replace(&"04".repeat(32), &"04".repeat(31)),
        text.replace("\"allow\"", "\"maybe\""),
    ] {
        assert!(Entry::decode(bad.as_bytes()).is_err(), "{bad}");
    }
    let import = Entry {
        action: Action::ReferenceImport,
        release_key_sha256: None,
        reference_measurements: Some(vec![format!("snp:{}", "ab".repeat(48))]),
        ..e.clone()
    };
    assert_eq!(Entry::decode(&import.encode().unwrap()).unwrap(), import);
    for bad in [format!("snp:{}", "AB".repeat(48)), format!("sgx:{}", "ab".repeat(48)), "ab".repeat(48)] {
        let wrong = Entry { reference_measurements: Some(vec![bad.clone()]), ..import.clone() };
        assert!(wrong.encode().is_err(), "{bad}");
    }
    let mut no_key = e.clone();
    no_key.release_key_sha256 = None;
    assert!(no_key.encode().is_err(), "a release must name its release key");
}

#[test]
fn tiles_are_strict_and_match_the_tree() {
    let (tree, _) = trees(600);
    for (path, ok) in [
        ("tile/0/000", true),
        ("tile/0/001", true),
        ("tile/0/002.p/88", true),
        ("tile/1/000.p/2", true),
        ("tile/0/2", false),
        ("tile/0/002.p/0", false),
        ("tile/0/002.p/256", false),
        ("tile/64/000", false),
        ("tile/entries/000", false),
        ("tile/8/0/000", false),
        ("tile/00/000", false),
        ("../etc/passwd", false),
    ] {
        assert_eq!(HashTile::parse(path).is_ok(), ok, "{path}");
        if ok {
            assert_eq!(HashTile::parse(path).unwrap().path(), path);
        }
    }
    let full = HashTile::parse("tile/0/001").unwrap().read(&tree, 600).unwrap();
    assert_eq!(full.len(), 256 * 32);
    assert_eq!(&full[..32], &leaf_hash(&leaf(256)).0);
    let partial = HashTile::parse("tile/0/002.p/88").unwrap().read(&tree, 600).unwrap();
    assert_eq!(&partial[87 * 32..], &leaf_hash(&leaf(599)).0);
    // Level 1 tile 0 holds the roots of the two full level-0 tiles.
    let l1 = HashTile::parse("tile/1/000.p/2").unwrap().read(&tree, 600).unwrap();
    assert_eq!(&l1[..32], &root(&trees(256).0, 256).unwrap().0);
    // A tile the tree does not yet hold in full is refused, not served short.
    assert!(HashTile::parse("tile/0/002.p/89").unwrap().read(&tree, 600).is_err());
    assert!(HashTile::parse("tile/0/002").unwrap().read(&tree, 600).is_err());
    assert!(HashTile::parse("tile/0/001").unwrap().read(&tree, 400).is_err());
    let paths: Vec<String> = tiles_at_level(600, 0).iter().map(HashTile::path).collect();
    assert_eq!(paths, ["tile/0/000", "tile/0/001", "tile/0/002.p/88"]);
}

#[test]
fn a_client_checks_the_release_proof_against_its_requirement() {
    let release_key = [0x04u8; 32];
    let mut tree = MemoryTree::new();
    for i in 0..9 {
        tree.append(&leaf(i)).unwrap();
    }
    let entry = Entry {
        v: 1,
        time_ms: 1,
        action: Action::Release,
        actor: "guest".into(),
        key_id: Some("k".into()),
        key_version: Some(1),
        decision: "allow".into(),
        reason: None,
        tee: Some("sim".into()),
        measurement: Some("aa".repeat(48)),
        chip_id_hmac: None,
        policy_sha256: None,
        reference_values_sha256: None,
        release_key_sha256: Some(hex::encode(release_key)),
        legacy_chain_head: None,
        reference_measurements: None,
    };
    let bytes = entry.encode().unwrap();
    let index = tree.append(&bytes).unwrap();
    tree.append(&leaf(99)).unwrap();
    let now = 1_700_000_000;
    let mut cp = open_checkpoint(&signed(&tree), log_signer().public(), &[]).unwrap();
    let ws = [witness_signer(1), witness_signer(2)];
    let named: Vec<NoteKey> = ws.iter().map(|w| w.public().clone()).collect();
    for w in &ws {
        cp.add_cosignatures(&cosign::cosign(w, cp.text(), now).unwrap(), &named).unwrap();
    }
    let inclusion = prove_inclusion(&tree, 11, index).unwrap();
    let proof = ReleaseProof::new(&bytes, index, &inclusion, &cp.to_bytes());
    let req = LogRequirement {
        log: log_signer().public().clone(),
        witnesses: named.clone(),
        min_cosigners: 2,
        max_clock_skew_s: 300,
    };
    let ok = proof.verify(&req, &release_key, now).unwrap();
    assert_eq!((ok.index, ok.checkpoint.size()), (9, 11));

    // Another release key, fewer witnesses than required, a tampered proof, another leaf.
    assert!(matches!(proof.verify(&req, &[5; 32], now), Err(TlogError::ReleaseKeyMismatch { .. })));
    let three = LogRequirement { min_cosigners: 3, ..req.clone() };
    assert!(matches!(proof.verify(&three, &release_key, now), Err(TlogError::NotEnoughCosignatures { .. })));
    let mut bad = proof.clone();
    bad.inclusion[0] = ReleaseProof::new(&[], 0, &[Hash([1; 32])], &[]).inclusion[0].clone();
    assert!(matches!(bad.verify(&req, &release_key, now), Err(TlogError::InclusionProof)));
    let mut moved = proof.clone();
    moved.index = 8;
    assert!(moved.verify(&req, &release_key, now).is_err());
    let other = ReleaseProof::new(&leaf(3), 3, &prove_inclusion(&tree, 11, 3).unwrap(), &cp.to_bytes());
    assert!(matches!(other.verify(&req, &release_key, now), Err(TlogError::Entry(_))));
    // Serialized form round-trips (it travels as JSON).
    let json = serde_json::to_string(&proof).unwrap();
    assert_eq!(serde_json::from_str::<ReleaseProof>(&json).unwrap(), proof);
}

fn admin(action: Action, key: &str, version: Option<i64>, policy: Option<&str>) -> Entry {
    Entry {
        v: 1,
        time_ms: 1_700_000_000_000,
        action,
        actor: "admin".into(),
        key_id: Some(key.into()),
        key_version: version,
        decision: "allow".into(),
        reason: None,
        tee: None,
        measurement: None,
        chip_id_hmac: None,
        policy_sha256: policy.map(str::to_owned),
        reference_values_sha256: None,
        release_key_sha256: None,
        legacy_chain_head: None,
        reference_measurements: None,
    }
}

fn released(key: &str, version: i64, measurement: &str, policy: &str) -> Entry {
    Entry {
        actor: "guest".into(),
        tee: Some("sim".into()),
        measurement: Some(measurement.into()),
        release_key_sha256: Some("04".repeat(32)),
        ..admin(Action::Release, key, Some(version), Some(policy))
    }
}

#[test]
fn the_monitor_flags_what_a_correct_service_never_logs() {
    use crate::monitor::{Alert, Monitor, split_bundle};
    let (p1, p2, good, bad) = ("01".repeat(32), "02".repeat(32), "aa".repeat(48), "bb".repeat(48));
    let import = Entry {
        reference_measurements: Some(vec![format!("sim:{good}")]),
        reference_values_sha256: Some("05".repeat(32)),
        ..admin(Action::ReferenceImport, "k", None, None)
    };
    let entries: Vec<Vec<u8>> = [
        import,
        admin(Action::KeyCreate, "k", Some(1), Some(&p1)),
        released("k", 1, &good, &p1), // 2: fine
        released("k", 1, &bad, &p1),  // 3: unreferenced measurement
        released("k", 1, &good, &p2), // 4: a policy no admin entry set
        admin(Action::PolicySet, "k", None, Some(&p2)),
        released("k", 1, &good, &p2), // 6: fine now
        admin(Action::KeyRevoke, "k", Some(1), None),
        released("k", 1, &good, &p2), // 8: under a revoked version
    ]
    .iter()
    .map(|e| e.encode().unwrap())
    .collect();
    let mut tree = MemoryTree::new();
    let mut monitor = Monitor::default();
    let key = log_signer();
    // Two steps, as a monitor follows a growing log.
    let mut alerts = Vec::new();
    for range in [0..4, 4..9] {
        for e in &entries[range.clone()] {
            tree.append(e).unwrap();
        }
        let cp = open_checkpoint(&signed(&tree), key.public(), &[]).unwrap();
        alerts.extend(monitor.update(&cp, &entries[range]).unwrap());
    }
    assert_eq!(
        alerts,
        vec![
            Alert::UnreferencedMeasurement {
                index: 3,
                key_id: "k".into(),
                tee: "sim".into(),
                measurement: bad.clone()
            },
            Alert::UnrecordedPolicy { index: 4, key_id: "k".into(), policy: p2.clone() },
            Alert::RevokedKeyRelease { index: 8, key_id: "k".into(), version: 1 },
        ]
    );

    // Its state survives a restart, and then it still refuses a rollback and a fork.
    let path = std::env::temp_dir().join(format!("nacre-monitor-{}.json", std::process::id()));
    monitor.save(&path).unwrap();
    let mut monitor = Monitor::load(&path).unwrap();
    assert_eq!(monitor.size(), 9);
    let mut small = MemoryTree::new();
    for e in &entries[..8] {
        small.append(e).unwrap();
    }
    let rollback = open_checkpoint(&signed(&small), key.public(), &[]).unwrap();
    assert!(matches!(monitor.update(&rollback, &[]), Err(TlogError::Rollback { old: 9, new: 8 })));
    small.append(b"{}").unwrap();
    let fork = open_checkpoint(&signed(&small), key.public(), &[]).unwrap();
    assert!(matches!(monitor.update(&fork, &[]), Err(TlogError::Fork { size: 9 })));
    // A grown tree whose entries are not the ones served: refused, state unchanged.
    tree.append(b"{\"x\":1}").unwrap();
    let grown = open_checkpoint(&signed(&tree), key.public(), &[]).unwrap();
    assert!(matches!(monitor.update(&grown, &[b"{\"x\":2}".to_vec()]), Err(TlogError::ConsistencyProof)));
    assert_eq!(monitor.size(), 9);
    let _ = std::fs::remove_file(path);

    // Entry bundles split strictly.
    let bundle = [&[0u8, 2][..], b"{}", &[0, 1], b"x"].concat();
    assert_eq!(split_bundle(&bundle).unwrap(), vec![b"{}".to_vec(), b"x".to_vec()]);
    assert!(split_bundle(&bundle[..bundle.len() - 1]).is_err());
    assert!(split_bundle(&[0]).is_err());
}
