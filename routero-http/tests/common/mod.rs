//! What the ERP tests' local servers share.
// Each test crate uses some of these.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::TcpStream;

/// One HTTP/1.1 request read off a connection.
pub(crate) struct Incoming {
    pub(crate) method: String,
    pub(crate) target: String,
    /// Names lower-cased.
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
}

/// The next request on `reader`; `None` when the client closed the connection.
pub(crate) fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Incoming>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or_default().to_owned();
    let target = words.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
    }
    let length = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Incoming {
        method,
        target,
        headers,
        body,
    }))
}

/// A JSON answer with `status`.
pub(crate) fn reply(out: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}
