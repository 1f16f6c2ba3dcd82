//! `shoal logs [-f] [--tail N] SERVICE`: streams a service's output. Lines are prefixed
//! `SERVICE.SLOT@NODE | ` when the service has several tasks, as Compose does.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;

use anyhow::Context;
use shoal_proto::pb::{LogLine, LogsRequest, PsRequest};

use super::Ctx;
use crate::args::LogsArgs;

pub async fn run(args: LogsArgs, ctx: &mut Ctx) -> anyhow::Result<()> {
    let several = several_tasks(&args.service, ctx).await;
    let req = LogsRequest {
        service: args.service.clone(),
        follow: args.follow,
        tail: args
            .tail
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
    };
    let mut stream = ctx
        .client
        .call(|mut c| {
            let req = req.clone();
            async move { c.logs(req).await }
        })
        .await
        .with_context(|| format!("read the logs of {}", args.service))?;
    let mut writer = Prefixer::new(several);
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let line = tokio::select! {
            _ = &mut ctrl_c => break,
            msg = stream.message() => msg.map_err(crate::error::ApiError::from)
                .with_context(|| format!("read the logs of {}", args.service))?,
        };
        let Some(line) = line else { break };
        let bytes = writer.push(&line);
        let out: &mut dyn Write = if line.stderr {
            &mut stderr
        } else {
            &mut stdout
        };
        out.write_all(&bytes).context("write the logs")?;
        out.flush().context("write the logs")?;
    }
    for (is_stderr, bytes) in writer.finish() {
        let out: &mut dyn Write = if is_stderr { &mut stderr } else { &mut stdout };
        out.write_all(&bytes).context("write the logs")?;
    }
    stdout.flush().context("write the logs")?;
    Ok(())
}

/// Whether `service` (`STACK/NAME` or `NAME`) currently has more than one task. A
/// failure here only costs the prefixes: the logs call reports real errors.
async fn several_tasks(service: &str, ctx: &mut Ctx) -> bool {
    let (stack, name) = match service.split_once('/') {
        Some((s, n)) => (s.to_string(), n.to_string()),
        None => (String::new(), service.to_string()),
    };
    let req = PsRequest { stack, all: false };
    match ctx
        .client
        .call(|mut c| {
            let req = req.clone();
            async move { c.ps(req).await }
        })
        .await
    {
        Ok(reply) => {
            let ids: BTreeSet<&str> = reply
                .tasks
                .iter()
                .filter(|t| t.service == name && t.desired == "running")
                .map(|t| t.id.as_str())
                .collect();
            ids.len() > 1
        }
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "cannot count the service's tasks");
            false
        }
    }
}

/// Turns log chunks into output bytes, prefixing whole lines when asked to (or once a
/// second task shows up). Partial lines wait, per task and stream, for their end.
struct Prefixer {
    prefix: bool,
    first_task: Option<String>,
    /// By (task id, stderr): the prefix and the unfinished line.
    partial: HashMap<(String, bool), (String, Vec<u8>)>,
    order: Vec<(String, bool)>,
}

impl Prefixer {
    fn new(prefix: bool) -> Prefixer {
        Prefixer {
            prefix,
            first_task: None,
            partial: HashMap::new(),
            order: Vec::new(),
        }
    }

    fn push(&mut self, line: &LogLine) -> Vec<u8> {
        match &self.first_task {
            None => self.first_task = Some(line.task_id.clone()),
            Some(first) if *first != line.task_id => self.prefix = true,
            Some(_) => {}
        }
        if !self.prefix {
            return line.data.clone();
        }
        let key = (line.task_id.clone(), line.stderr);
        if !self.partial.contains_key(&key) {
            self.order.push(key.clone());
        }
        let (prefix, buf) = self.partial.entry(key).or_insert_with(|| {
            (
                format!("{}.{}@{} | ", line.service, line.slot, line.node),
                Vec::new(),
            )
        });
        buf.extend_from_slice(&line.data);
        let mut out = Vec::new();
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            out.extend_from_slice(prefix.as_bytes());
            out.extend(buf.drain(..=end));
        }
        out
    }

    /// What is left of unfinished lines, each ended with a newline, with its stream.
    fn finish(&mut self) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        for key in self.order.drain(..) {
            if let Some((prefix, buf)) = self.partial.remove(&key) {
                if !buf.is_empty() {
                    let mut bytes = prefix.into_bytes();
                    bytes.extend(buf);
                    bytes.push(b'\n');
                    out.push((key.1, bytes));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(task: &str, slot: u64, data: &str, stderr: bool) -> LogLine {
        LogLine {
            task_id: task.into(),
            service: "web".into(),
            slot,
            node: "node-a".into(),
            data: data.as_bytes().to_vec(),
            stderr,
        }
    }

    fn s(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn one_task_is_passed_through() {
        let mut p = Prefixer::new(false);
        assert_eq!(s(p.push(&chunk("t1", 1, "hel", false))), "hel");
        assert_eq!(s(p.push(&chunk("t1", 1, "lo\n", false))), "lo\n");
        assert!(p.finish().is_empty());
    }

    #[test]
    fn several_tasks_get_prefixed_whole_lines() {
        let mut p = Prefixer::new(true);
        assert_eq!(
            s(p.push(&chunk("t1", 1, "a\nb", false))),
            "web.1@node-a | a\n"
        );
        assert_eq!(
            s(p.push(&chunk("t2", 2, "x\ny\n", false))),
            "web.2@node-a | x\nweb.2@node-a | y\n"
        );
        assert_eq!(
            s(p.push(&chunk("t1", 1, "c\n", false))),
            "web.1@node-a | bc\n"
        );
        assert_eq!(s(p.push(&chunk("t2", 2, "oops", true))), "");
        assert_eq!(p.finish(), vec![(true, b"web.2@node-a | oops\n".to_vec())]);
    }

    #[test]
    fn a_second_task_turns_prefixes_on() {
        let mut p = Prefixer::new(false);
        assert_eq!(s(p.push(&chunk("t1", 1, "a\n", false))), "a\n");
        assert_eq!(
            s(p.push(&chunk("t2", 2, "b\n", false))),
            "web.2@node-a | b\n"
        );
    }
}
