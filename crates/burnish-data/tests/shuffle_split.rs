//! Seeded shuffling and the hash split.

use burnish_data::{
    PairSchema, PairWriter, PreferencePair, ReaderBuilder, ShuffleBuffer, Split, Subset,
};

#[test]
fn shuffle_is_deterministic_per_seed_and_a_permutation() {
    let a: Vec<u32> = ShuffleBuffer::new(0..1000u32, 64, 7).collect();
    let b: Vec<u32> = ShuffleBuffer::new(0..1000u32, 64, 7).collect();
    let c: Vec<u32> = ShuffleBuffer::new(0..1000u32, 64, 8).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a, (0..1000).collect::<Vec<_>>());
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    // A buffer of one is the identity.
    assert_eq!(
        ShuffleBuffer::new(0..10u32, 1, 3).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
}

fn pair(i: usize, with_id: bool) -> PreferencePair {
    let mut p = PreferencePair::new(
        format!("prompt {i}"),
        format!("chosen {i}"),
        format!("rejected {i}"),
    );
    if with_id {
        p.id = Some(format!("row-{i}"));
    }
    p
}

#[test]
fn split_is_stable_across_file_orderings_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..3)
        .map(|f| dir.path().join(format!("part{f}.parquet")))
        .collect();
    for (f, path) in files.iter().enumerate() {
        let mut w = PairWriter::create(path, PairSchema::default()).unwrap();
        (f * 400..(f + 1) * 400).for_each(|i| w.write(pair(i, false)).unwrap());
        w.finish().unwrap();
    }
    let split = Split::new(0.1);
    let eval_set = |order: &[usize]| {
        let mut eval: Vec<String> = ReaderBuilder::new()
            .paths(order.iter().map(|&i| files[i].clone()))
            .pairs()
            .unwrap()
            .map(Result::unwrap)
            .filter(|p| split.is_eval(p))
            .map(|p| p.prompt.to_display_text())
            .collect();
        eval.sort();
        eval
    };
    let a = eval_set(&[0, 1, 2]);
    let b = eval_set(&[2, 0, 1]);
    assert_eq!(a, b);
    // Roughly the requested fraction of 1200 rows.
    assert!((80..=160).contains(&a.len()), "{}", a.len());
    // Fixed hash: the same rows are held out in every run and on every machine.
    assert_eq!(
        split.hash(&pair(0, false)),
        Split::new(0.1).hash(&pair(0, false))
    );
    let salted = Split {
        eval_fraction: 0.1,
        salt: 1,
    };
    assert_ne!(split.hash(&pair(0, false)), salted.hash(&pair(0, false)));
}

#[test]
fn split_uses_the_id_when_present() {
    let split = Split::new(0.5);
    let mut a = pair(1, true);
    let b = pair(1, true);
    a.chosen = "something else".into();
    assert_eq!(split.hash(&a), split.hash(&b));
    assert_eq!(Split::new(0.0).subset(&a), Subset::Train);
    assert_eq!(Split::new(1.0).subset(&a), Subset::Eval);
}
