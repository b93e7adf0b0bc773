//! The FAKE API server's HTTP/1.1: requests with Content-Length or chunked bodies, kept-alive
//! connections, JSON answers. Enough for kubectl's Go client and ureq.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};

/// The largest header block or body accepted.
const MAX_SIZE: usize = 1 << 20;

/// One request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Query parameters, percent-decoded.
    pub query: BTreeMap<String, String>,
    /// Headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// One answer: a status code and a JSON body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub code: u16,
    /// JSON.
    pub body: serde_json::Value,
}

fn limit() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "request too large")
}

fn line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    if r.take(MAX_SIZE as u64).read_until(b'\n', &mut buf)? == 0 {
        return Ok(None);
    }
    let text = String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
}

/// Reads one request; `None` at the end of the connection.
pub fn read_request(r: &mut impl BufRead) -> io::Result<Option<Request>> {
    let Some(first) = line(r)? else {
        return Ok(None);
    };
    let mut parts = first.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, first));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut request = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect(),
        ..Request::default()
    };
    let mut size = 0;
    loop {
        let Some(header) = line(r)? else {
            return Ok(None);
        };
        if header.is_empty() {
            break;
        }
        size += header.len();
        if size > MAX_SIZE {
            return Err(limit());
        }
        if let Some((name, value)) = header.split_once(':') {
            request
                .headers
                .insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    if request
        .header("transfer-encoding")
        .eq_ignore_ascii_case("chunked")
    {
        loop {
            let size_line = line(r)?.unwrap_or_default();
            let hex = size_line.split(';').next().unwrap_or("").trim();
            let chunk = usize::from_str_radix(hex, 16)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if chunk == 0 {
                // Trailers, up to the empty line.
                while line(r)?.is_some_and(|l| !l.is_empty()) {}
                break;
            }
            if request.body.len() + chunk > MAX_SIZE {
                return Err(limit());
            }
            let start = request.body.len();
            request.body.resize(start + chunk, 0);
            r.read_exact(&mut request.body[start..])?;
            line(r)?;
        }
    } else if let Ok(length) = request.header("content-length").parse::<usize>() {
        if length > MAX_SIZE {
            return Err(limit());
        }
        request.body.resize(length, 0);
        r.read_exact(&mut request.body)?;
    }
    Ok(Some(request))
}

/// Writes one answer.
pub fn write_response(w: &mut impl Write, response: &Response) -> io::Result<()> {
    let body = response.body.to_string();
    let reason = match response.code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    };
    write!(
        w,
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\nContent-Length: {}\r\n\r\n{body}",
        response.code,
        body.len()
    )?;
    w.flush()
}

/// Percent-decodes a query component (`+` is a space, as Go's url.Values encodes it).
fn decode(s: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some((h, l))) => {
                out.extend(u8::try_from(h * 16 + l).ok());
                i += 3;
                continue;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_either_body_framing() {
        let raw = "PATCH /api/v1/nodes/n1?fieldManager=kubectl-cordon&fieldSelector=spec.nodeName%3Dn1+x HTTP/1.1\r\nHost: x\r\nContent-Type: application/strategic-merge-patch+json\r\nContent-Length: 4\r\n\r\nabcd\
                   POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut r = io::BufReader::new(raw.as_bytes());
        let a = read_request(&mut r).unwrap().unwrap();
        assert_eq!(a.method, "PATCH");
        assert_eq!(a.path, "/api/v1/nodes/n1");
        assert_eq!(a.query["fieldSelector"], "spec.nodeName=n1 x");
        assert_eq!(
            a.header("content-type"),
            "application/strategic-merge-patch+json"
        );
        assert_eq!(a.body, b"abcd");
        let b = read_request(&mut r).unwrap().unwrap();
        assert_eq!(b.body, b"abcde");
        assert!(read_request(&mut r).unwrap().is_none());
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
