//! `broker data check` and `broker data compact` on a data directory written through the log.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rkyv::util::AlignedVec;
use storage::dir::{check, compact, shard_dir};
use storage::exec::Files;
use storage::log::{Log, LogOptions, Policy};
use storage::schema::{DoneV1, EnqueueV1, MessageV1, Record, RetainV1, SessionV1, V1};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("storage-dir-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn session(sid: u64, client: &str) -> Record {
    Record::Session(SessionV1 {
        sid,
        incarnation: 1,
        client_id: client.into(),
        protocol: 5,
        expiry_interval_s: 3600,
        expires_at_ms: None,
        subscriptions: Vec::new(),
        will: None,
        will_at_ms: None,
        last_packet_id: 0,
    })
}

/// Shard `shard`: one session with 1,000 deliveries of which 900 completed, one retained
/// message set 50 times.
fn write_shard(data: &Path, shard: u32) {
    let dir = shard_dir(data, shard);
    let o = LogOptions {
        policy: Policy::Never,
        segment_bytes: 16 << 10,
        ..LogOptions::default()
    };
    let mut log = Log::new(shard, o, &Default::default(), Instant::now());
    let mut files = Files::new(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut buf = AlignedVec::<16>::new();
    let mut put = |log: &mut Log, r: Record| {
        r.encode(&mut buf);
        log.append(r.kind(), V1, &buf);
    };
    let sid = (u64::from(shard) << 48) | 1;
    put(&mut log, session(sid, &format!("client-{shard}")));
    for seq in 0..1000u64 {
        let mid = (u64::from(shard) << 48) | seq;
        put(
            &mut log,
            Record::Message(MessageV1 {
                mid,
                expires_at_ms: None,
                publish: vec![0x32; 80],
            }),
        );
        put(
            &mut log,
            Record::Enqueue(EnqueueV1 {
                sid,
                seq,
                mid,
                qos: 1,
                retain: false,
                sub_ids: Vec::new(),
            }),
        );
        if seq < 900 {
            put(&mut log, Record::Done(DoneV1 { sid, seq }));
        }
        if seq % 20 == 0 {
            put(
                &mut log,
                Record::Retain(RetainV1 {
                    topic: format!("r/{shard}"),
                    message: Some(MessageV1 {
                        mid,
                        expires_at_ms: None,
                        publish: vec![0x31; 40],
                    }),
                }),
            );
        }
    }
    while let Some(job) = log.poll_job(Instant::now()) {
        let (res, data) = files.run(job);
        log.complete(Instant::now(), res, data);
    }
}

#[test]
fn check_counts_and_compact_shrinks_without_changing_the_state() {
    let data = scratch("compact");
    write_shard(&data, 0);
    write_shard(&data, 1);
    let before = check(&data).unwrap_or_else(|e| panic!("{e}"));
    assert!(before.is_clean());
    assert_eq!(before.shards.len(), 2);
    let t = before.total;
    assert_eq!(
        (t.sessions, t.queued, t.messages, t.retained),
        (2, 200, 200, 2)
    );
    let done = compact(&data).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.len(), 2);
    for c in &done {
        assert!(
            c.after * 3 < c.before,
            "shard {}: {} -> {} bytes",
            c.shard,
            c.before,
            c.after
        );
    }
    let after = check(&data).unwrap_or_else(|e| panic!("{e}"));
    assert!(after.is_clean());
    assert_eq!(after.total, before.total);
    for (a, b) in after.shards.iter().zip(&before.shards) {
        assert_eq!(a.image, b.image);
        assert!(a.report.snapshot.is_some());
    }
    let _ = fs::remove_dir_all(&data);
}

#[test]
fn check_reports_damage_and_compact_refuses_a_locked_dir() {
    let data = scratch("damage");
    write_shard(&data, 0);
    let dir = shard_dir(&data, 0);
    let mut segs: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let mut bytes = fs::read(&segs[0]).unwrap_or_default();
    bytes[1000] ^= 0x55;
    fs::write(&segs[0], &bytes).unwrap_or_else(|e| panic!("{e}"));
    let c = check(&data).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.is_clean());
    let text = c.shards[0]
        .report
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("skipped") && text.contains("offset"),
        "{text}"
    );
    // A broker holding the directory: compact refuses.
    let lock = storage::lock::DirLock::acquire(&data).unwrap_or_else(|e| panic!("{e}"));
    let err = compact(&data)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("in use by another broker"), "{err}");
    drop(lock);
    let _ = fs::remove_dir_all(&data);
}
