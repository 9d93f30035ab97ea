//! Server-sent events, read incrementally from the stream's chunks.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` unless the server named it.
    pub name: String,
    pub data: String,
}

#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    name: String,
    data: String,
    max_event_bytes: usize,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            name: String::new(),
            data: String::new(),
            max_event_bytes,
        }
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut out = Vec::new();
        for &b in chunk {
            if b != b'\n' {
                self.line.push(b);
                if self.line.len() + self.data.len() > self.max_event_bytes {
                    return Err(format!(
                        "an event is larger than {} bytes",
                        self.max_event_bytes
                    ));
                }
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = std::mem::take(&mut self.line);
            let line = String::from_utf8(line).map_err(|_| "an event is not UTF-8".to_owned())?;
            if line.is_empty() {
                if !self.data.is_empty() {
                    let name = std::mem::take(&mut self.name);
                    out.push(SseEvent {
                        name: if name.is_empty() {
                            "message".into()
                        } else {
                            name
                        },
                        data: std::mem::take(&mut self.data),
                    });
                }
                self.name.clear();
                continue;
            }
            if line.starts_with(':') {
                continue; // keep-alive comment
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.name = value.to_owned(),
                "data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                _ => {} // id, retry: not needed; the full list comes on every connect
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunks_and_skips_comments() {
        let mut p = SseParser::new(1024);
        assert_eq!(p.push(b": keep-alive\n\nevent: serv").unwrap(), vec![]);
        let got = p
            .push(b"ices\r\nid: 3\r\ndata: {\"a\":\ndata: 1}\r\n\r\ndata: x\n\n")
            .unwrap();
        assert_eq!(
            got,
            vec![
                SseEvent {
                    name: "services".into(),
                    data: "{\"a\":\n1}".into()
                },
                SseEvent {
                    name: "message".into(),
                    data: "x".into()
                },
            ]
        );
    }

    #[test]
    fn refuses_oversized_events() {
        let mut p = SseParser::new(16);
        assert!(p.push(b"data: 0123456789abcdef").is_err());
    }
}
