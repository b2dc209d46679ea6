//! `nacre guard fit|check` and `nacre seal --guard-manifest` on the sample model, with training
//! rows and self-tests written here (their expected outputs from the plain-Rust reference, so
//! no Python is needed).

use super::{nacre, tmp};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn fit_check_and_seal_a_guard_manifest() {
    let dir = tmp("guard");
    let p = |n: &str| dir.join(n).display().to_string();
    assert!(nacre(&["model", "sample", "--out", &p("m.onnx")]).status.success());
    // Training rows: a header of names, 500 rows on a lattice.
    let mut csv = String::from("a,b,c,d\n");
    for i in 0..500 {
        let f = |k: i32| ((i * k) % 17) as f32 / 4.0 - 2.0;
        csv += &format!("{},{},{},{}\n", f(3), f(5), f(7), f(11));
    }
    std::fs::write(dir.join("train.csv"), csv).unwrap();
    let x = [1.0f32, -0.5, 0.25, 2.0];
    let y = nacre_model::sample::mlp_reference(&x);
    let self_tests = |y: [f32; 2]| {
        serde_json::json!({
            "expected_from": "mlp_reference (plain Rust)",
            "vectors": [{"inputs": {"x": {"shape": [1, 4], "data": x}}, "outputs": {"y": {"shape": [1, 2], "data": y}}}]
        })
        .to_string()
    };
    std::fs::write(dir.join("st.json"), self_tests(y)).unwrap();
    std::fs::write(dir.join("st-wrong.json"), self_tests([y[0] + 0.5, y[1]])).unwrap();

    let fit = |st: &str, out: &str| {
        nacre(&[
            "guard",
            "fit",
            &p("m.onnx"),
            "--data",
            &p("train.csv"),
            "--self-tests",
            &p(st),
            "--out",
            &p(out),
            "--output",
            "round:3",
        ])
    };
    let out = fit("st.json", "g.json");
    assert!(out.status.success(), "{}", stderr(&out));
    let digest = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("g.json")).unwrap()).unwrap();
    assert_eq!(doc["input"]["tensor"], "x");
    assert_eq!(doc["input"]["features"][2]["name"], "c");
    assert_eq!(doc["reference"]["rows"], 500);
    assert_eq!(doc["output"], serde_json::json!({"policy": "round", "decimals": 3}));
    // Self-tests that tract does not reproduce: refused, nothing written.
    let out = fit("st-wrong.json", "bad.json");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("self-test 0: output \"y\" element 0"), "{}", stderr(&out));
    assert!(!dir.join("bad.json").exists());

    let out = nacre(&["guard", "check", &p("g.json"), "--model", &p("m.onnx")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&digest));
    // Broken manifests: each refused by check and by seal, and nothing is sealed.
    type Edit = fn(&mut serde_json::Value);
    let broken: [(&str, Edit); 4] = [
        ("features", |d| {
            d["input"]["features"].as_array_mut().unwrap().pop();
        }),
        ("input", |d| d["input"]["tensor"] = "nope".into()),
        ("self-test shape", |d| {
            d["self_tests"]["vectors"][0]["inputs"]["x"]["shape"] = serde_json::json!([2, 2])
        }),
        ("format", |d| d["format"] = "nacre-guard-v9".into()),
    ];
    for (what, edit) in broken {
        let mut d = doc.clone();
        edit(&mut d);
        std::fs::write(dir.join("broken.json"), serde_json::to_vec(&d).unwrap()).unwrap();
        let out = nacre(&["guard", "check", &p("broken.json"), "--model", &p("m.onnx")]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        let out = nacre(&[
            "seal",
            &p("m.onnx"),
            "--out",
            &p("b.sealed"),
            "--key-out",
            &p("b.key"),
            "--guard-manifest",
            &p("broken.json"),
        ]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        assert!(!dir.join("b.sealed").exists() && !dir.join("b.key").exists(), "{what}");
    }
    std::fs::write(dir.join("huge.json"), vec![b' '; nacre_guard::manifest::MAX_LEN + 1]).unwrap();
    let out = nacre(&["guard", "check", &p("huge.json"), "--model", &p("m.onnx")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Sealed with the manifest: the header carries it byte for byte, and its digest is fit's.
    let out = nacre(&[
        "seal",
        &p("m.onnx"),
        "--out",
        &p("g.sealed"),
        "--key-out",
        &p("g.key"),
        "--guard-manifest",
        &p("g.json"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = std::fs::File::open(dir.join("g.sealed")).unwrap();
    let (header, _) = nacre_sealed::Header::read(&mut std::io::BufReader::new(file)).unwrap();
    assert_eq!(header.guard_manifest.as_deref(), Some(&std::fs::read(dir.join("g.json")).unwrap()[..]));
    assert_eq!(hex::encode(header.guard_digest()), digest);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `nacre guard fit --extraction-history` calibrates PRADA's delta on the training rows, and
/// `nacre guard replay` runs a query stream through the detector: the training-like stream
/// raises no alarm, a walk in equal steps does.
#[test]
fn extraction_detector_is_calibrated_and_replayed() {
    let dir = tmp("guard-extraction");
    let p = |n: &str| dir.join(n).display().to_string();
    assert!(nacre(&["model", "sample", "--out", &p("m.onnx")]).status.success());
    // Natural-looking rows: each value the sum of four uniform draws (SplitMix64).
    let mut state = 7u64;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut csv = String::from("a,b,c,d\n");
    for _ in 0..2000 {
        let v: Vec<String> =
            (0..4).map(|_| format!("{:.5}", (0..4).map(|_| uniform()).sum::<f64>())).collect();
        csv += &(v.join(",") + "\n");
    }
    std::fs::write(dir.join("train.csv"), &csv).unwrap();
    let out = nacre(&[
        "guard",
        "fit",
        &p("m.onnx"),
        "--data",
        &p("train.csv"),
        "--out",
        &p("g.json"),
        "--extraction-history",
        "100",
        "--extraction-action",
        "refuse",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("lowest W of the training replay"), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("g.json")).unwrap()).unwrap();
    let delta = doc["extraction"]["delta"].as_f64().unwrap();
    assert!(delta > 0.5 && delta < 1.0, "{delta}");
    assert_eq!(doc["extraction"]["action"], "refuse");

    let replay = |data: &str| -> serde_json::Value {
        let out = nacre(&["guard", "replay", &p("g.json"), "--model", &p("m.onnx"), "--data", &p(data)]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let natural = replay("train.csv");
    assert_eq!((natural["rows"].as_u64(), natural["first_alarm"].as_u64()), (Some(2000), None), "{natural}");
    let mut walk = String::from("a,b,c,d\n");
    for i in 0..200 {
        walk += &format!("{},0.5,-0.5,0.25\n", f64::from(i) * 0.01 - 1.0);
    }
    std::fs::write(dir.join("walk.csv"), walk).unwrap();
    let r = replay("walk.csv");
    assert!(r["first_alarm"].as_u64().is_some_and(|i| i <= 60), "{r}");
}
