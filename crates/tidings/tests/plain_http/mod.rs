//! A plain-HTTP webhook receiver on loopback for black-box tests of the real binary (run with
//! `TIDINGS_ALLOW_HTTP`): `POST /ok` answers 200, any other path 503, until [`Receiver::up`]
//! makes every path answer 200. It keeps the `webhook-id` of every request it answered 200.
//! One request per connection.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Receiver {
    pub port: u16,
    all_up: Arc<AtomicBool>,
    delivered: Arc<Mutex<HashSet<String>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let all_up = Arc::new(AtomicBool::new(false));
        let delivered = Arc::new(Mutex::new(HashSet::new()));
        let (up, seen) = (all_up.clone(), delivered.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (up, seen) = (up.clone(), seen.clone());
                std::thread::spawn(move || answer(stream, &up, &seen));
            }
        });
        Receiver {
            port,
            all_up,
            delivered,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// From now on every path answers 200.
    pub fn up(&self) {
        self.all_up.store(true, Ordering::SeqCst);
    }

    /// The `webhook-id`s answered 200 so far.
    pub fn delivered(&self) -> HashSet<String> {
        self.delivered.lock().unwrap().clone()
    }
}

fn answer(mut stream: std::net::TcpStream, up: &AtomicBool, seen: &Mutex<HashSet<String>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Headers, then as many body bytes as they announce.
    let (head_end, length) = loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let length = header(&buf[..end], "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while buf.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let ok = buf.starts_with(b"POST /ok ") || up.load(Ordering::SeqCst);
    let status = if ok {
        if let Some(id) = header(&buf[..head_end], "webhook-id") {
            seen.lock().unwrap().insert(id);
        }
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    );
}

fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}
