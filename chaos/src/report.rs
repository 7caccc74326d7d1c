//! The campaign's table (what a person reads) and the same figures as JSON.

use std::fmt::Write;

use crate::campaign::Report;

pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let verdict = &report.verdict;
    let _ = writeln!(
        out,
        "tetrad chaos campaign: seed {}, {} s of faults ({} s wall)",
        report.seed, report.duration_s, report.wall_s
    );
    if let Some(byzantine) = &report.byzantine {
        let _ = writeln!(out, "Byzantine validator {byzantine} (checked: the honest nodes)");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| fault | injected | longest stall | longest resume after heal | within goal ({} ms) |",
        report.goal_resume_ms
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for (kind, summary) in &report.per_kind {
        let _ = writeln!(
            out,
            "| {kind} | {} | {} ms | {} | {} |",
            summary.injected,
            summary.longest_stall_ms,
            summary
                .longest_resume_after_heal_ms
                .map_or("none within the limit".to_string(), |ms| format!("{ms} ms")),
            if summary.within_goal { "yes" } else { "no" }
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| transactions | count |");
    let _ = writeln!(out, "| --- | --- |");
    for (name, value) in [
        ("acknowledged committed (certificate verified)", verdict.acknowledged),
        ("failed (refused)", verdict.failed),
        ("unknown", verdict.unknown),
        ("unknown, found in the chain", verdict.unknown_in_chain),
        ("in the chain", verdict.chain_txs),
        ("**lost**", verdict.lost),
        ("**duplicated**", verdict.duplicated),
        ("of which replayed copies (listed by nodes before 2026-12-02)", verdict.replayed_copies),
        ("left out of their blocks (a wrong nonce: never executed)", verdict.left_out),
        ("phantom (never submitted)", verdict.phantom),
        ("refused but in the chain", verdict.refused_in_chain),
        ("acknowledged without a verified certificate", verdict.unverified_acks),
        ("blocks whose transactions are not the certified batch", verdict.bad_blocks),
        ("headers whose state root is not the replay's", verdict.state_mismatches),
        ("blocks carrying transactions", verdict.blocks_with_txs),
    ] {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    let _ = writeln!(
        out,
        "| final height ({}) | {} |",
        if report.byzantine.is_some() { "all honest nodes" } else { "all nodes" },
        verdict.height
    );
    let _ = writeln!(out);
    for control in &report.negative_controls {
        let _ = writeln!(
            out,
            "negative control, {}: {}",
            control.planted,
            if control.caught { "caught" } else { "NOT CAUGHT" }
        );
    }
    for allowed in &verdict.allowed {
        let _ = writeln!(out, "ALLOWED (--allow-replayed-copies): {allowed}");
    }
    for violation in &verdict.violations {
        let _ = writeln!(out, "VIOLATION: {violation}");
    }
    for failure in &report.failures {
        let _ = writeln!(out, "FAILURE: {failure}");
    }
    let _ =
        writeln!(out, "{}: replay with {}", if report.passed { "PASSED" } else { "FAILED" }, report.replay);
    out
}
