//! The wire: what travels over RabbitMQ and how we reach it. The message
//! format (`envelope`, replay headers included), the bounded broker calls
//! (`transport`), publishing with confirms (`publisher`) and the queue
//! topology a worker needs (`topology`). Every lapin future is awaited
//! through `transport`'s bounded helpers (the test below holds every file of
//! `src/` to it).

pub mod envelope;
pub mod publisher;
pub mod topology;
pub mod transport;

#[cfg(test)]
mod tests {
    //! Invariant: nothing awaits the broker without a limit. Every lapin
    //! future is awaited through `transport`'s bounded helpers
    //! (`transport::answer` and the functions built on it), never directly,
    //! so a broker that stops answering fails the step instead of holding
    //! the worker, the apply or the emergency stop forever.

    use std::path::{Path, PathBuf};

    /// Calls that return a lapin future (channel, connection and confirm
    /// methods). Matched as `.name(`.
    const LAPIN_CALLS: [&str; 20] = [
        "basic_publish",
        "basic_ack",
        "basic_nack",
        "basic_reject",
        "basic_get",
        "basic_consume",
        "basic_cancel",
        "basic_qos",
        "basic_recover",
        "queue_declare",
        "queue_bind",
        "queue_unbind",
        "queue_delete",
        "queue_purge",
        "exchange_declare",
        "exchange_bind",
        "exchange_delete",
        "confirm_select",
        "create_channel",
        "wait_for_confirms",
    ];

    fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src/") {
            let path = entry.expect("read a directory entry").path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }

    /// Where a call awaited on the spot is: `file:line`, for every call of
    /// `LAPIN_CALLS` whose closing parenthesis is followed by `.await`.
    fn direct_awaits(text: &str) -> Vec<usize> {
        let mut lines = Vec::new();
        for name in LAPIN_CALLS {
            let needle = format!(".{name}(");
            for (at, _) in text.match_indices(&needle) {
                let mut depth = 0usize;
                let mut end = None;
                for (i, c) in text[at + needle.len() - 1..].char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(at + needle.len() - 1 + i + 1);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let Some(end) = end else { continue };
                if text[end..].trim_start().starts_with(".await") {
                    lines.push(text[..at].lines().count());
                }
            }
        }
        lines
    }

    #[test]
    fn the_check_finds_a_direct_await() {
        assert_eq!(direct_awaits("x;\nchannel.basic_ack(tag, options)\n    .await?;"), vec![2]);
        assert!(direct_awaits("answer(\"ack\", channel.basic_ack(tag, options)).await?;").is_empty());
    }

    #[test]
    fn every_lapin_future_is_awaited_through_the_bounded_helpers() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        let mut offenders = Vec::new();
        for file in files {
            // The helpers await lapin, each call under a time limit; the
            // publisher awaits a window of publishes under CONFIRM_TIMEOUT.
            // The benches' raw baselines measure lapin itself: a hung broker
            // stalls a benchmark its operator watches, not the system.
            if file.ends_with("wire/transport.rs")
                || file.ends_with("wire/publisher.rs")
                || file.starts_with(root.join("bench"))
            {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("read a source file");
            for line in direct_awaits(&text) {
                offenders.push(format!("{}:{line}", file.display()));
            }
        }
        assert!(
            offenders.is_empty(),
            "lapin futures awaited without a limit (wrap them in transport::answer): {offenders:?}"
        );
    }
}
