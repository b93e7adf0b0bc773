//! Downloads against a one-connection HTTP server on 127.0.0.1 that answers slowly, stalls,
//! trickles or sends too much; the stall timeout and the speed floor are scaled down to seconds.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

/// A server for one request: it reads the request's head, then `respond` writes the answer.
fn serve(respond: impl FnOnce(&mut TcpStream) + Send + 'static) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/file", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        respond(&mut stream);
    });
    (url, handle)
}

fn head(length: Option<usize>) -> String {
    match length {
        Some(n) => format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"),
        None => "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_owned(),
    }
}

/// Writes `body` in `pieces` pieces, `gap` apart (the first one at once). A client that gave up
/// makes the writes fail; the server does not care.
fn trickle(stream: &mut TcpStream, body: &[u8], pieces: usize, gap: Duration) {
    for (i, piece) in body.chunks(body.len().div_ceil(pieces)).enumerate() {
        if i > 0 {
            std::thread::sleep(gap);
        }
        if stream
            .write_all(piece)
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
    }
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A floor of 1 KiB/s over 1 s.
fn limits(stall: Duration, max_size: u64) -> Limits {
    Limits {
        stall,
        floor: SpeedFloor {
            bytes_per_sec: 1024,
            window: Duration::from_secs(1),
        },
        max_size,
    }
}

/// Writes `bytes` one at a time, `gap` apart, until they run out or the client hangs up.
fn drip(stream: &mut TcpStream, bytes: &[u8], gap: Duration) {
    for byte in bytes.chunks(1) {
        if stream
            .write_all(byte)
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
        std::thread::sleep(gap);
    }
}

/// Runs `download` on a thread of its own; `None` when it still runs after `within`.
fn download_within(
    within: Duration,
    url: String,
    sha256: String,
    path: PathBuf,
    limits: Limits,
) -> Option<Result<(), Error>> {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(download(&url, &sha256, &path, limits));
    });
    result.recv_timeout(within).ok()
}

#[test]
fn a_download_that_stalls_fails_after_the_stall_timeout_counted_from_the_last_byte() {
    let stall = Duration::from_secs(2);
    let content = body(4000);
    let sent = content.clone();
    // Half the body in four pieces over 1.5 s, then silence (the connection stays open).
    let (url, server) = serve(move |stream| {
        stream.write_all(head(Some(sent.len())).as_bytes()).unwrap();
        trickle(stream, &sent[..2000], 4, Duration::from_millis(500));
        std::thread::sleep(Duration::from_secs(6));
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("urls/file");
    let start = Instant::now();
    let err = download(&url, &sha256(&content), &path, limits(stall, 1 << 20)).unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(err, Error::Stall { after } if after == stall),
        "{err:?}"
    );
    assert!(err.why().contains("stalled"), "{}", err.why());
    // The last byte came at 1.5 s: the stall is counted from there, not from the start.
    assert!(
        elapsed >= Duration::from_millis(1500) + stall,
        "gave up after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(6),
        "gave up after {elapsed:?}"
    );
    assert!(!path.exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("urls")).unwrap().count(),
        0
    );
    server.join().unwrap();
}

#[test]
fn a_server_that_never_answers_is_a_stall() {
    let stall = Duration::from_secs(1);
    let (url, server) = serve(|_| std::thread::sleep(Duration::from_secs(4)));
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let err = download(
        &url,
        &"0".repeat(64),
        &dir.path().join("f"),
        limits(stall, 1 << 20),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Stall { .. }), "{err:?}");
    assert!(start.elapsed() >= stall, "{:?}", start.elapsed());
    server.join().unwrap();
}

#[test]
fn a_slow_steady_download_outlasting_several_stall_timeouts_completes() {
    let stall = Duration::from_secs(1);
    let content = body(64 * 1024);
    let sent = content.clone();
    // 9 pieces 450 ms apart: 3.6 s in all, more than three times the stall timeout, but never
    // a second without a byte.
    let (url, server) = serve(move |stream| {
        stream.write_all(head(Some(sent.len())).as_bytes()).unwrap();
        trickle(stream, &sent, 9, Duration::from_millis(450));
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("urls/file");
    let start = Instant::now();
    download(&url, &sha256(&content), &path, limits(stall, 1 << 20)).unwrap();
    assert!(start.elapsed() > stall * 3, "{:?}", start.elapsed());
    assert_eq!(std::fs::read(&path).unwrap(), content);
    server.join().unwrap();
}

#[test]
fn a_body_larger_than_the_size_cap_is_refused() {
    let content = body(3000);
    let stall = Duration::from_secs(5);

    // Announced: refused before the body is read.
    let sent = content.clone();
    let (url, server) = serve(move |stream| {
        stream.write_all(head(Some(sent.len())).as_bytes()).unwrap();
        let _ = stream.write_all(&sent);
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("urls/file");
    let err = download(&url, &sha256(&content), &path, limits(stall, 2048)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::AnnounceSize {
                length: 3000,
                limit: 2048
            }
        ),
        "{err:?}"
    );
    assert!(err.why().contains("`size`"), "{}", err.why());
    server.join().unwrap();

    // Not announced (the body ends when the connection closes): cut off at the cap.
    let sent = content.clone();
    let (url, server) = serve(move |stream| {
        stream.write_all(head(None).as_bytes()).unwrap();
        let _ = stream.write_all(&sent);
    });
    let err = download(&url, &sha256(&content), &path, limits(stall, 2048)).unwrap_err();
    assert!(matches!(err, Error::ExceedSize { limit: 2048 }), "{err:?}");
    assert!(!path.exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("urls")).unwrap().count(),
        0
    );
    server.join().unwrap();

    // At the cap exactly: accepted.
    let sent = content.clone();
    let (url, server) = serve(move |stream| {
        stream.write_all(head(None).as_bytes()).unwrap();
        stream.write_all(&sent).unwrap();
    });
    download(&url, &sha256(&content), &path, limits(stall, 3000)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), content);
    server.join().unwrap();
}

#[test]
fn a_body_trickled_under_the_speed_floor_is_abandoned_as_too_slow() {
    let content = body(4000);
    let sent = content.clone();
    // A byte every 200 ms: the stall timeout (1 s) never fires, and 5 bytes/s is far under the
    // floor of 1 KiB/s (the whole body would take 800 s).
    let (url, _server) = serve(move |stream| {
        stream.write_all(head(Some(sent.len())).as_bytes()).unwrap();
        drip(stream, &sent, Duration::from_millis(200));
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("urls/file");
    let start = Instant::now();
    let err = download_within(
        Duration::from_secs(20),
        url,
        sha256(&content),
        path.clone(),
        limits(Duration::from_secs(1), 1 << 20),
    )
    .expect("the download still ran after 20 s")
    .unwrap_err();
    assert!(matches!(err, Error::Crawl { .. }), "{err:?}");
    assert!(err.why().contains("too slow"), "{}", err.why());
    // Judged once the first window (1 s) is over.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1),
        "gave up after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "gave up after {elapsed:?}"
    );
    assert!(!path.exists());
}

#[test]
fn headers_trickled_for_longer_than_the_stall_timeout_are_a_stall() {
    // The status line, then a header a byte every 200 ms: each read gets a byte well within the
    // stall timeout, but the headers never end.
    let (url, _server) = serve(|stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Padding: ");
        drip(stream, &[b'a'; 200], Duration::from_millis(200));
    });
    let dir = tempfile::tempdir().unwrap();
    let stall = Duration::from_secs(1);
    let start = Instant::now();
    let err = download_within(
        Duration::from_secs(20),
        url,
        "0".repeat(64),
        dir.path().join("f"),
        limits(stall, 1 << 20),
    )
    .expect("the download still ran after 20 s")
    .unwrap_err();
    assert!(
        matches!(err, Error::Stall { after } if after == stall),
        "{err:?}"
    );
    let elapsed = start.elapsed();
    assert!(elapsed >= stall, "gave up after {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(4),
        "gave up after {elapsed:?}"
    );
}
