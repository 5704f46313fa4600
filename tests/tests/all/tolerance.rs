//! Snapshots of trained values, compared with a stated tolerance.
//!
//! A trained number depends on the order of its floating-point sums, and gemm sums in a different
//! order on its AVX-512 and its AVX2 kernels (and blocks its sums by the CPU's cache sizes). A last-bit
//! difference in one step grows over the next steps into the third digit of a loss. So a snapshot of
//! trained values keeps its readable text under insta, but its comparison is [`Tolerance`]: every
//! character outside the numbers must match exactly, integers must match exactly (steps, counts,
//! shapes), and each decimal number must lie within `rel · max(|a|, |b|) + abs` of the recorded one.
//! A number glued to a name (`z7`, `mu_0`) is part of the name and matches exactly.
//!
//! `.ci/run` runs every test on both kernel paths (the second time built with
//! `--no-default-features`, which leaves out gemm's AVX-512 kernels). The tolerances stated where
//! [`within`] is called are the measured cross-kernel differences with headroom; a change to the
//! training code moves trained values by far more (the tests below check both sides).

use insta::internals::SnapshotContents;
use insta::{Comparator, Snapshot};

#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Relative tolerance, of the larger magnitude.
    pub rel: f64,
    /// Absolute floor, for values near zero and for values that were rounded to a few decimals.
    pub abs: f64,
}

/// Runs an insta assertion (`|| insta::assert_snapshot!(…)`) with numbers compared within `tol`.
pub fn within(tol: Tolerance, assertion: impl FnOnce()) {
    let mut settings = insta::Settings::clone_current();
    settings.set_comparator(Box::new(tol));
    settings.bind(assertion);
}

#[derive(Debug, PartialEq)]
enum Token<'a> {
    Text(&'a str),
    Integer(&'a str),
    Decimal(&'a str, f64),
}

/// Splits text into numbers and the text between them. A number is an optionally signed run of
/// digits with an optional fraction and exponent that does not continue a name.
fn tokens(text: &str) -> Vec<Token<'_>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut text_start) = (0, 0);
    while i < b.len() {
        let glued = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'.');
        let sign = (b[i] == b'-' || b[i] == b'+') && b.get(i + 1).is_some_and(u8::is_ascii_digit);
        if glued || !(b[i].is_ascii_digit() || sign) {
            i += 1;
            continue;
        }
        let start = i;
        i += sign as usize;
        let digits = |i: &mut usize| {
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
        };
        digits(&mut i);
        let mut decimal = false;
        if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
            i += 1;
            digits(&mut i);
            decimal = true;
        }
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            let mut j = i + 1;
            if j < b.len() && (b[j] == b'-' || b[j] == b'+') {
                j += 1;
            }
            if j < b.len() && b[j].is_ascii_digit() {
                i = j;
                digits(&mut i);
                decimal = true;
            }
        }
        if i < b.len() && (b[i].is_ascii_alphabetic() || b[i] == b'_') {
            continue; // `3d`, `2x`: part of a word
        }
        if text_start < start {
            out.push(Token::Text(&text[text_start..start]));
        }
        let s = &text[start..i];
        out.push(if decimal { Token::Decimal(s, s.parse().unwrap()) } else { Token::Integer(s) });
        text_start = i;
    }
    if text_start < b.len() {
        out.push(Token::Text(&text[text_start..]));
    }
    out
}

impl Tolerance {
    /// The first difference beyond tolerance, described, or `None` when the texts match.
    pub fn mismatch(&self, reference: &str, test: &str) -> Option<String> {
        let (r, t) = (tokens(reference), tokens(test));
        for (a, b) in r.iter().zip(&t) {
            let close = match (a, b) {
                (Token::Integer(x), Token::Integer(y)) => x == y,
                (Token::Text(x), Token::Text(y)) => x == y,
                (Token::Text(_), _) | (_, Token::Text(_)) => false,
                _ => {
                    let (x, y) = (number(a), number(b));
                    (x - y).abs() <= self.rel * x.abs().max(y.abs()) + self.abs
                }
            };
            if !close {
                // The line of the first differing character.
                let same = match (a, b) {
                    (Token::Text(x), Token::Text(y)) => x.bytes().zip(y.bytes()).take_while(|(p, q)| p == q).count(),
                    _ => 0,
                };
                let line = reference[..offset(reference, a) + same].matches('\n').count() + 1;
                return Some(format!(
                    "line {line}: recorded {}, now {} (tolerance: relative {}, absolute {})",
                    show(a),
                    show(b),
                    self.rel,
                    self.abs
                ));
            }
        }
        (r.len() != t.len()).then(|| format!("the recorded text has {} parts, this one {}", r.len(), t.len()))
    }
}

fn number(t: &Token) -> f64 {
    match t {
        Token::Decimal(_, x) => *x,
        Token::Integer(s) => s.parse().unwrap(),
        Token::Text(_) => f64::NAN,
    }
}

fn show(t: &Token) -> String {
    match t {
        Token::Text(s) => format!("{s:?}"),
        Token::Integer(s) | Token::Decimal(s, _) => s.to_string(),
    }
}

/// Byte offset of a token borrowed from `text`.
fn offset(text: &str, t: &Token) -> usize {
    let s = match t {
        Token::Text(s) | Token::Integer(s) | Token::Decimal(s, _) => s,
    };
    s.as_ptr() as usize - text.as_ptr() as usize
}

/// The largest relative and absolute differences between the numbers of two texts with the same tokens.
pub fn largest_deviation(reference: &str, test: &str) -> (f64, f64) {
    let mut worst = (0.0f64, 0.0f64);
    for (a, b) in tokens(reference).iter().zip(&tokens(test)) {
        if matches!(a, Token::Decimal(..)) || matches!(b, Token::Decimal(..)) {
            let (x, y) = (number(a), number(b));
            let d = (x - y).abs();
            if d > 0.0 {
                worst = (worst.0.max(d / x.abs().max(y.abs())), worst.1.max(d));
            }
        }
    }
    worst
}

impl Comparator for Tolerance {
    fn matches(&self, reference: &Snapshot, test: &Snapshot) -> bool {
        match (reference.contents(), test.contents()) {
            (SnapshotContents::Text(r), SnapshotContents::Text(t)) => match self.mismatch(&r.to_string(), &t.to_string()) {
                None => {
                    // For choosing tolerances: how far this run's numbers are from the recorded ones.
                    if std::env::var_os("VAELAB_TOLERANCE_REPORT").is_some() {
                        let (rel, abs) = largest_deviation(&r.to_string(), &t.to_string());
                        let name = test.snapshot_name().unwrap_or("?");
                        eprintln!("tolerance report: {name}: largest deviation relative {rel:.2e}, absolute {abs:.2e}");
                    }
                    true
                }
                Some(why) => {
                    eprintln!("snapshot differs beyond tolerance: {why}");
                    false
                }
            },
            _ => reference.contents() == test.contents(),
        }
    }

    fn dyn_clone(&self) -> Box<dyn Comparator> {
        Box::new(*self)
    }
}

/// `.ci/run` sets `VAELAB_EXPECT_GEMM_KERNELS` for its second pass (`avx2`), so that pass fails if the
/// build still ran AVX-512 kernels; and a run records its kernels in `run.json`.
#[test]
fn the_expected_gemm_kernels_run_and_the_run_records_them() {
    let kernels = vaelab::nn::kernels::gemm_kernel();
    if let Ok(expected) = std::env::var("VAELAB_EXPECT_GEMM_KERNELS") {
        assert_eq!(kernels, expected, "VAELAB_EXPECT_GEMM_KERNELS");
    }
    eprintln!("gemm kernels: {kernels}");
    let dir = crate::training::scratch("run-json-kernels");
    let mut spec = crate::training::tiny();
    spec.train.steps = 2;
    vaelab::train::train(&spec, &crate::training::options(&dir)).unwrap();
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["cpu_kernels"], kernels);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance { rel: 0.02, abs: 1e-3 };

    #[test]
    fn numbers_within_tolerance_match_and_others_do_not() {
        let recorded = "step  1  loss=6.163e2  rec=6.134e2  vq=2.804e0\nrow_means:\n  - 0.084\n  - 0.09\nmin: 0\n";
        assert_eq!(TOL.mismatch(recorded, recorded), None);
        // 1 % and one rounding step of three decimals: within.
        let close = "step  1  loss=6.224e2  rec=6.134e2  vq=2.804e0\nrow_means:\n  - 0.085\n  - 0.089\nmin: 0.001\n";
        assert_eq!(TOL.mismatch(recorded, close), None);
        // 3 % on one loss: beyond, and named.
        let far = "step  1  loss=6.35e2  rec=6.134e2  vq=2.804e0\nrow_means:\n  - 0.084\n  - 0.09\nmin: 0\n";
        assert_eq!(
            TOL.mismatch(recorded, far).unwrap(),
            "line 1: recorded 6.163e2, now 6.35e2 (tolerance: relative 0.02, absolute 0.001)"
        );
        // Twice the absolute floor near zero: beyond.
        assert!(TOL.mismatch("min: 0.000", "min: 0.003").is_some());
    }

    #[test]
    fn integers_names_and_text_match_exactly() {
        // A step or a count is never approximately right.
        assert!(TOL.mismatch("step 10 ", "step 11 ").is_some());
        assert!(TOL.mismatch("- 32", "- 33").is_some());
        // The digits of a name belong to the name: ranking z7 before z3 is a different result.
        assert!(TOL.mismatch("- z7\n- z3", "- z3\n- z7").is_some());
        assert!(TOL.mismatch("loss=1.0e0", "lost=1.0e0").is_some());
        assert!(TOL.mismatch("a 1.0 b", "a 1.0").is_some());
        assert_eq!(
            TOL.mismatch("a 1.0\nb 2.0\n", "a 1.0\nc 2.0\n").unwrap(),
            r#"line 2: recorded "\nb ", now "\nc " (tolerance: relative 0.02, absolute 0.001)"#
        );
        assert!(TOL.mismatch("kl_weight=0.50", "kl_weight=0.50").is_none());
        assert_eq!(
            tokens("z7 -1.5e-3 x2 3d 12"),
            [Token::Text("z7 "), Token::Decimal("-1.5e-3", -1.5e-3), Token::Text(" x2 3d "), Token::Integer("12")]
        );
    }
}
