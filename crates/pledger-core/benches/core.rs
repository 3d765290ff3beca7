//! Benchmarks of the pure core: resolving a request against a routing table, and replaying a
//! prompt's history. Prints its figures; run with `cargo bench -p pledger-core`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use pledger_core::event::{Envelope, EventMeta, ReviewLayer, ReviewVerdict};
use pledger_core::routing::{resolve, RoutedRollout, RoutedStage, RoutingTable};
use pledger_core::{
    decide, evolve, Actor, Artifact, Command, Context, FileFormat, PromptName, PromptState,
    Timestamp,
};

fn time<F: FnMut()>(label: &str, iterations: u64, mut f: F) {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let per = start.elapsed().as_nanos() as f64 / iterations as f64;
    println!("{label:<52} {per:>10.0} ns/op   ({:.0} ops/s)", 1e9 / per);
}

fn artifact(i: usize) -> Artifact {
    Artifact::from_text(
        &format!("instructions = \"version {i}\"\nknown_limitations = []\n[model]\nfamily = \"gpt-4o\"\ntemperature = 0.2\n[tools]\nschema_version = \"none\"\n"),
        FileFormat::Toml,
    )
    .unwrap()
}

fn main() {
    let prompt = PromptName::parse("bench").unwrap();
    let table = RoutingTable {
        prompt: prompt.clone(),
        stable: Some(artifact(0).version_id()),
        rollout: Some(RoutedRollout {
            release: pledger_core::ReleaseId::new(prompt.clone(), 1),
            candidate: artifact(1).version_id(),
            state: "rolling_out".into(),
            current_stage: "everyone".into(),
            stage_visit: Some("bench-r1/1/1790000000000".into()),
            bucketing_salt: "5f0c0a7e".into(),
            stages: vec![
                RoutedStage {
                    name: "internal".into(),
                    matches: [(
                        "user_kind".to_string(),
                        pledger_core::plan::MatchValue::One("internal".into()),
                    )]
                    .into(),
                    percent: 100.0,
                },
                RoutedStage {
                    name: "eu".into(),
                    matches: [(
                        "geo".to_string(),
                        pledger_core::plan::MatchValue::One("eu".into()),
                    )]
                    .into(),
                    percent: 25.0,
                },
                RoutedStage {
                    name: "everyone".into(),
                    matches: BTreeMap::new(),
                    percent: 10.0,
                },
            ],
        }),
        ledger_sequence: 42,
        artifacts: Default::default(),
    };
    let attrs: BTreeMap<String, String> = [
        ("geo".to_string(), "eu".to_string()),
        ("intent".to_string(), "billing".to_string()),
    ]
    .into();
    let mut n = 0u64;
    time("resolve (3 stages, sticky bucket)", 1_000_000, || {
        n += 1;
        let unit = format!("user-{n}");
        black_box(resolve(black_box(&table), Some(&unit), black_box(&attrs)));
    });

    // A history of 1,000 published versions and 1,000 reviews, replayed by evolve.
    let mut state = PromptState::new(prompt.clone());
    let mut history = Vec::new();
    let mut seq = 0i64;
    let mut apply =
        |state: &mut PromptState, actor: &str, command: Command, history: &mut Vec<Envelope>| {
            let ctx = Context::new(
                Actor::parse(actor).unwrap(),
                pledger_core::identity::Role::ALL.into_iter().collect(),
                Timestamp::from_unix_millis(seq),
            );
            for event in decide(state, &command, &ctx).unwrap() {
                seq += 1;
                let env = Envelope::new(
                    event,
                    EventMeta {
                        event_id: format!("e{seq}"),
                        occurred_at: ctx.now,
                        actor: ctx.actor.clone(),
                        causation_id: None,
                        correlation_id: "bench".into(),
                    },
                );
                evolve(state, &env);
                history.push(env);
            }
        };
    apply(
        &mut state,
        "maria",
        Command::RegisterPrompt {
            owner: "perf".into(),
        },
        &mut history,
    );
    for i in 0..1000 {
        apply(
            &mut state,
            "maria",
            Command::PublishVersion {
                artifact: artifact(i),
            },
            &mut history,
        );
    }
    let candidate = artifact(1).version_id();
    apply(
        &mut state,
        "maria",
        Command::ProposeChange {
            candidate,
            rationale: "bench".into(),
            expected_changes: vec![],
        },
        &mut history,
    );
    let release = pledger_core::ReleaseId::new(prompt.clone(), 1);
    for i in 0..1000 {
        let verdict = if i % 2 == 0 {
            ReviewVerdict::Approve
        } else {
            ReviewVerdict::RequestChanges
        };
        let command = Command::SubmitReview {
            release: release.clone(),
            layer: ReviewLayer::Product,
            verdict,
            note: None,
        };
        apply(&mut state, "priya", command, &mut history);
    }
    let events = history.len() as u64;
    time(
        &format!("replay a {events}-event history (evolve)"),
        200,
        || {
            let mut s = PromptState::new(prompt.clone());
            for e in &history {
                evolve(&mut s, e);
            }
            black_box(s);
        },
    );
    let wire: Vec<String> = history
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    time(
        &format!("decode {events} wire events (JSON) + replay"),
        50,
        || {
            let mut s = PromptState::new(prompt.clone());
            for w in &wire {
                let e: Envelope = serde_json::from_str(w).unwrap();
                evolve(&mut s, &e);
            }
            black_box(s);
        },
    );
    let ctx = Context::new(
        Actor::parse("tomas").unwrap(),
        pledger_core::identity::Role::ALL.into_iter().collect(),
        Timestamp::from_unix_millis(0),
    );
    let review = Command::SubmitReview {
        release,
        layer: ReviewLayer::Technical,
        verdict: ReviewVerdict::Approve,
        note: None,
    };
    time("decide a review on that state", 100_000, || {
        black_box(decide(black_box(&state), &review, &ctx).unwrap());
    });
    // Digest composition over the same history (the scheduler and `pledger digest`).
    time(
        &format!("compose a digest over {events} events"),
        200,
        || {
            let mut b = pledger_core::digest::DigestBuilder::new(
                "1970-W01",
                Timestamp::from_unix_millis(0),
                Timestamp::from_unix_millis(i64::MAX),
                "UTC",
                pledger_core::DurationSpec::parse("3d").unwrap(),
            );
            for e in &history {
                b.observe(e);
            }
            black_box(b.finish());
        },
    );
    // Release windows: weekdays 09:00-16:00 Berlin, never Friday after 12:00.
    let windows = pledger_core::window::ReleaseWindows::from_toml(
        "timezone = \"Europe/Berlin\"\n[[open]]\ncron = \"0 0 9 * * Mon-Fri\"\nduration = \"7h\"\n[[closed]]\ncron = \"0 0 12 * * Fri\"\nduration = \"12h\"\n",
    )
    .unwrap()
    .compile()
    .unwrap();
    // Tuesday 2026-11-24 10:00 UTC (open) and Saturday 2026-11-28 12:00 UTC (closed).
    let (open_at, closed_at) = (
        Timestamp::from_unix_millis(1_795_514_400_000),
        Timestamp::from_unix_millis(1_795_867_200_000),
    );
    time("release windows: is_open (open instant)", 20_000, || {
        black_box(windows.is_open(black_box(open_at)));
    });
    time(
        "release windows: next_open from Saturday noon",
        20_000,
        || {
            black_box(windows.next_open(black_box(closed_at)));
        },
    );
    // An outcome message of 100 outcomes as the bench's ingest section publishes them.
    let outcomes: Vec<pledger_core::outcome::Outcome> = (0..100u64)
        .map(|i| pledger_core::outcome::Outcome {
            prompt: prompt.clone(),
            version: artifact(1 + (i % 2) as usize).version_id(),
            release: Some(pledger_core::ReleaseId::new(prompt.clone(), 1)),
            arm: Some(if i % 2 == 0 {
                pledger_core::routing::Arm::Candidate
            } else {
                pledger_core::routing::Arm::Baseline
            }),
            stage_visit: Some("bench-r1/0/1790000000000".into()),
            unit: Some(format!("user-{}", i % 10_000)),
            attrs: [
                ("geo".to_string(), "eu".to_string()),
                ("user_kind".to_string(), "external".to_string()),
            ]
            .into(),
            request_id: format!("req-{i}"),
            fallback: false,
            escalated: i % 50 == 0,
            manually_corrected: false,
            refusal: false,
            latency_ms: 400.0 + (i % 97) as f64 * 7.0,
            tokens_in: 300 + i % 50,
            tokens_out: 200 + i % 30,
            cost_usd: Some(0.002),
            feedback: None,
        })
        .collect();
    let message = serde_json::to_vec(&outcomes).unwrap();
    time("outcomes: parse_outcome_message of 100", 2_000, || {
        black_box(pledger_core::outcome::parse_outcome_message(black_box(
            &message,
        )));
    });
    time(
        "outcomes: serde_json::from_slice::<Vec<Outcome>> of 100",
        2_000,
        || {
            black_box(
                serde_json::from_slice::<Vec<pledger_core::outcome::Outcome>>(black_box(&message))
                    .unwrap(),
            );
        },
    );
    // Verification of stored events: the state-free part (`verify::precheck`: decoding, the
    // SSHSIG signature, the hashes) and its pieces, over the history above, sealed.
    let key = ssh_key::PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[7; 32]));
    let sealed: Vec<Vec<u8>> = history
        .iter()
        .map(|e| {
            pledger_core::verify::seal(e.clone(), None, &key)
                .unwrap()
                .bytes
        })
        .collect();
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % sealed.len();
        &sealed[i]
    };
    time(
        "verify: precheck (decode, signature, hashes)",
        5_000,
        || {
            black_box(pledger_core::verify::precheck(black_box(next())));
        },
    );
    // A reader's chunk of 512 messages, per message: signatures verified in batches.
    let chunks: Vec<Vec<&[u8]>> = sealed
        .chunks(512)
        .filter(|c| c.len() == 512)
        .map(|c| c.iter().map(|b| &b[..]).collect())
        .collect();
    let mut k = 0;
    let start = Instant::now();
    for _ in 0..20 {
        k = (k + 1) % chunks.len();
        black_box(pledger_core::verify::precheck_all(black_box(&chunks[k])));
    }
    let per = start.elapsed().as_nanos() as f64 / (20.0 * 512.0);
    println!(
        "{:<52} {per:>10.0} ns/op   ({:.0} ops/s)",
        "verify: precheck_all of 512, per message",
        1e9 / per
    );
    time("verify: decode alone (Envelope::from_json)", 5_000, || {
        black_box(Envelope::from_json(black_box(next())).unwrap());
    });
    time(
        "verify: the hashes alone (event_hash, leaf_hash)",
        5_000,
        || {
            let b = next();
            black_box(pledger_core::verify::event_hash(black_box(b)));
            black_box(pledger_core::merkle::leaf_hash(black_box(b)));
        },
    );
    let public = key.public_key().clone();
    let sigs: Vec<(ssh_key::SshSig, Vec<u8>)> = history
        .iter()
        .map(|e| {
            let msg = pledger_core::verify::signing_bytes(e);
            let sig = key
                .sign(
                    pledger_core::verify::SIGNATURE_NAMESPACE,
                    ssh_key::HashAlg::Sha512,
                    &msg,
                )
                .unwrap();
            (sig, msg)
        })
        .collect();
    let mut j = 0;
    time("verify: SSHSIG signature alone (ssh-key)", 5_000, || {
        j = (j + 1) % sigs.len();
        let (sig, msg) = &sigs[j];
        public
            .verify(
                pledger_core::verify::SIGNATURE_NAMESPACE,
                black_box(msg),
                sig,
            )
            .unwrap();
    });
    snapshot_decode();
    println!("reproduce: cargo bench -p pledger-core");
}

/// Decoding a family snapshot of a prompt with 100,000 events of history in 11,111 release
/// cycles (section 12 of `pledger bench`): what a live state keeps of them, and the digests of
/// the family's event ids.
fn snapshot_decode() {
    use pledger_core::event::{ChangeProposed, Event, ReleaseCompleted, VersionPublished};
    let prompt = PromptName::parse("bench").unwrap();
    let mut state = PromptState::live(prompt.clone());
    let maria = Actor::parse("maria").unwrap();
    let mut n = 0u64;
    let mut fold = |state: &mut PromptState, event: Event| {
        n += 1;
        let meta = EventMeta {
            event_id: format!("e{n}"),
            occurred_at: Timestamp::from_unix_millis(1_795_510_800_000 + n as i64),
            actor: maria.clone(),
            causation_id: None,
            correlation_id: "bench".into(),
        };
        evolve(state, &Envelope::new(event, meta));
    };
    let mut previous = artifact(0).version_id();
    fold(
        &mut state,
        Event::VersionPublished(VersionPublished {
            prompt: prompt.clone(),
            version: previous.clone(),
            artifact: artifact(0),
        }),
    );
    for i in 1..11_112u32 {
        let a = artifact(i as usize);
        let version = a.version_id();
        let release = pledger_core::ReleaseId::new(prompt.clone(), i);
        fold(
            &mut state,
            Event::VersionPublished(VersionPublished {
                prompt: prompt.clone(),
                version: version.clone(),
                artifact: a,
            }),
        );
        fold(
            &mut state,
            Event::ChangeProposed(ChangeProposed {
                release: release.clone(),
                author: maria.clone(),
                candidate: version.clone(),
                baseline: Some(previous.clone()),
                rationale: "bench".into(),
                expected_changes: vec![],
            }),
        );
        fold(
            &mut state,
            Event::ReleaseCompleted(ReleaseCompleted {
                release,
                version: version.clone(),
                previous_stable: previous,
                forced: false,
                reason: None,
            }),
        );
        previous = version;
    }
    let ids: Vec<String> = (0..100_000)
        .map(|i| format!("0193a1b2-{i:04}-7000-8000-000000000000"))
        .collect();
    let snapshot = pledger_core::verify::FamilySnapshot {
        format: pledger_core::verify::SNAPSHOT_FORMAT,
        ledger: "bench".into(),
        prompt,
        through: 100_000,
        head: Some("sha256:00".into()),
        head_sequence: 100_000,
        state,
        event_ids: pledger_core::verify::EventIdDigests::default()
            .with(ids.iter().map(String::as_str)),
        ignored: vec![],
    };
    let json = serde_json::to_vec(&snapshot).unwrap();
    let label = format!(
        "snapshot of 11,111 releases, 100,000 ids: JSON decode ({} KiB)",
        json.len() / 1024
    );
    time(&label, 50, || {
        black_box(
            serde_json::from_slice::<pledger_core::verify::FamilySnapshot>(black_box(&json))
                .unwrap(),
        );
    });
    let stored = snapshot.encode();
    let label = format!(
        "  the same as a snapshot file stores it: decode ({} KiB)",
        stored.len() / 1024
    );
    time(&label, 50, || {
        black_box(pledger_core::verify::FamilySnapshot::decode(black_box(&stored)).unwrap());
    });
}
