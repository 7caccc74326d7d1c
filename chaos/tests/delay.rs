//! `tetrad-chaos delay` on a real NFQUEUE: two network namespaces joined by a veth pair, the
//! delayer in the first holding what it sends to the second. Needs root (the test command runs
//! as root). Every name is unique to the test process and the test, everything made is removed
//! in `Drop` (also on a panic), and every wait is bounded.
//!
//! The programs that send and receive inside the namespaces are this test binary again, run as
//! the ignored test `helper` with the role in `TETRAD_DELAY_TEST_ROLE`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tetrad-chaos");
const ROLE: &str = "TETRAD_DELAY_TEST_ROLE";
/// The longest any child process may run.
const LIMIT: Duration = Duration::from_secs(30);

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).stdin(Stdio::null()).output().expect("running ip");
    assert!(output.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
}

/// A child's stdout, line by line, through a channel (so that a wait can be bounded).
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|line| line.ok()) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Waits (bounded) for the first line that holds `prefix`; the line from there on. (The
/// helper's first line follows libtest's `test helper ... ` on the same line.)
fn wait_line(lines: &mpsc::Receiver<String>, prefix: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(prefix) => return line[line.find(prefix).unwrap_or(0)..].to_string(),
            Ok(_) => {}
            Err(error) => panic!("no line starting with {prefix:?} within {limit:?}: {error}"),
        }
    }
}

/// Waits (bounded) for `child` to exit; kills it past `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Namespaces `a` and `b`, a veth pair between them: `a` at .1, `b` at .2. Dropped: every
/// process in them killed, both deleted.
struct Pair {
    a: String,
    b: String,
    ip_a: String,
    ip_b: String,
    delayer: Option<(Child, mpsc::Receiver<String>)>,
}

impl Pair {
    fn new(tag: u8) -> Pair {
        let id = std::process::id() % 100_000;
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "this test needs root (network namespaces, NFQUEUE); the test command runs as root"
        );
        let pair = Pair {
            a: format!("tnd{id}-{tag}a"),
            b: format!("tnd{id}-{tag}b"),
            ip_a: format!("10.213.{tag}.1"),
            ip_b: format!("10.213.{tag}.2"),
            delayer: None,
        };
        // Made one by one: whatever exists when a step fails is removed by Drop.
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        let (veth_a, veth_b) = (format!("nd{id}{tag}a"), format!("nd{id}{tag}b"));
        ip(&[
            "link", "add", &veth_a, "netns", &pair.a, "type", "veth", "peer", "name", &veth_b, "netns",
            &pair.b,
        ]);
        ip(&["-n", &pair.a, "addr", "add", &format!("{}/24", pair.ip_a), "dev", &veth_a]);
        ip(&["-n", &pair.b, "addr", "add", &format!("{}/24", pair.ip_b), "dev", &veth_b]);
        for (ns, dev) in [(&pair.a, &veth_a), (&pair.b, &veth_b)] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// This test binary as the helper with `role`, in namespace `ns`, stdout piped.
    fn helper(&self, ns: &str, role: &str) -> Child {
        let exe = std::env::current_exe().expect("current_exe");
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .args(["helper", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
            .env(ROLE, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the helper")
    }

    /// Starts the delayer in `a` for what `a` sends to `b`, and the rule that feeds it.
    fn start_delayer(&mut self, delay_ms: u64, jitter_ms: u64) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.a, BIN, "delay", "--queue", "7", "--seed", "5"])
            .args(["--delay-ms", &delay_ms.to_string(), "--jitter-ms", &jitter_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting tetrad-chaos delay");
        let lines = lines_of(&mut child);
        self.delayer = Some((child, lines));
        let (_, lines) = self.delayer.as_ref().expect("just set");
        wait_line(lines, "delay: bound queue 7", Duration::from_secs(5));
        self.iptables("-A");
    }

    fn iptables(&self, action: &str) {
        ip(&[
            "netns",
            "exec",
            &self.a,
            "iptables",
            action,
            "OUTPUT",
            "-d",
            &self.ip_b,
            "-j",
            "NFQUEUE",
            "--queue-num",
            "7",
            "--queue-bypass",
        ]);
    }

    /// SIGTERM to the delayer; its exit status and its last line (the counters).
    fn stop_delayer(&mut self) -> (ExitStatus, String) {
        let (mut child, lines) = self.delayer.take().expect("a delayer runs");
        let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        assert!(sent.success());
        let status = wait_bounded(&mut child, Duration::from_secs(5));
        let counters = wait_line(&lines, "delay: queue 7 delayed", Duration::from_secs(2));
        (status, counters)
    }

    /// Round trips of TCP connects from `a` to a closed port of `b` (SYN out, RST back), ms.
    fn round_trips(&self, count: usize) -> Vec<f64> {
        let mut child = self.helper(&self.a, &format!("connect {}:9 {count}", self.ip_b));
        let lines = lines_of(&mut child);
        let status = wait_bounded(&mut child, LIMIT);
        assert!(status.success(), "connect helper: {status}");
        // Every line (the reader ends at the helper's EOF, just after its exit).
        let mut trips = Vec::new();
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
            if let Some(at) = line.find("rtt-us ") {
                trips.push(line[at + 7..].trim().parse::<f64>().expect("µs") / 1000.0);
            }
        }
        assert_eq!(trips.len(), count, "{trips:?}");
        trips
    }

    /// Sends `count` numbered UDP datagrams from `a` to `b`, `gap_us` apart; the numbers in the
    /// order `b` got them.
    fn udp_order(&self, count: usize, gap_us: u64) -> Vec<u64> {
        let mut receiver = self.helper(&self.b, &format!("udp-recv 7777 {count} 3000"));
        let lines = lines_of(&mut receiver);
        wait_line(&lines, "ready", Duration::from_secs(10));
        let mut sender = self.helper(&self.a, &format!("udp-send {}:7777 {count} {gap_us}", self.ip_b));
        let _sender_lines = lines_of(&mut sender);
        assert!(wait_bounded(&mut sender, LIMIT).success());
        assert!(wait_bounded(&mut receiver, LIMIT).success());
        let got = wait_line(&lines, "got", Duration::from_secs(2));
        got.split_whitespace().skip(1).map(|number| number.parse().expect("a number")).collect()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if let Some((mut child, _)) = self.delayer.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.a, &self.b] {
            // Whatever still runs inside dies first, then the namespace (and its veth end) goes.
            if let Ok(output) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

/// Pairs (earlier, later) sent in one order and received in the other.
fn inversions(order: &[u64]) -> usize {
    let mut count = 0;
    let mut highest = None;
    for number in order {
        match highest {
            Some(high) if *number < high => count += 1,
            _ => highest = Some(*number),
        }
    }
    count
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

#[test]
fn a_delay_raises_the_round_trip_by_about_the_delay() {
    let mut pair = Pair::new(1);
    let before = pair.round_trips(5);
    assert!(min(&before) < 50.0, "without a delayer: {before:?} ms");
    pair.start_delayer(100, 0);
    let delayed = pair.round_trips(5);
    // Only the SYN is delayed (the RST comes back on the undelayed direction).
    assert!(delayed.iter().all(|ms| *ms >= 95.0), "with 100 ms: {delayed:?} ms");
    assert!(delayed.iter().all(|ms| *ms <= 400.0), "with 100 ms: {delayed:?} ms");
    pair.iptables("-D");
    let (status, counters) = pair.stop_delayer();
    assert!(status.success(), "{status}: {counters}");
    assert!(counters.contains("delayed 5 "), "{counters}");
    let after = pair.round_trips(5);
    assert!(min(&after) < 50.0, "after the delayer: {after:?} ms");
}

#[test]
fn jitter_reorders_datagrams_and_loses_none() {
    let mut pair = Pair::new(2);
    let count = 300;
    let plain = pair.udp_order(count, 500);
    assert_eq!(plain.len(), count, "without a delayer");
    assert_eq!(inversions(&plain), 0, "a veth pair alone reorders nothing");
    pair.start_delayer(50, 50);
    let jittered = pair.udp_order(count, 500);
    let (status, counters) = pair.stop_delayer();
    assert!(status.success(), "{status}: {counters}");
    let mut sorted = jittered.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..count as u64).collect::<Vec<_>>(), "every datagram once");
    let out_of_order = inversions(&jittered);
    assert!(out_of_order > 0, "no datagram out of order with 50 ± 50 ms: {jittered:?}");
    let reordered: u64 = counters
        .split_whitespace()
        .skip_while(|word| *word != "reordered")
        .nth(1)
        .and_then(|number| number.parse().ok())
        .expect("a reordered count");
    assert!(reordered > 0, "{counters}");
    eprintln!("{out_of_order} of {count} datagrams arrived after a later one; {counters}");
}

#[test]
fn sigterm_lets_every_held_packet_through_at_once() {
    let mut pair = Pair::new(3);
    pair.start_delayer(10_000, 0);
    let count = 20;
    let mut receiver = pair.helper(&pair.b, &format!("udp-recv 7777 {count} 15000"));
    let lines = lines_of(&mut receiver);
    wait_line(&lines, "ready", Duration::from_secs(10));
    let mut sender = pair.helper(&pair.a, &format!("udp-send {}:7777 {count} 1000", pair.ip_b));
    let _sender_lines = lines_of(&mut sender);
    assert!(wait_bounded(&mut sender, LIMIT).success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(receiver.try_wait().expect("try_wait").is_none(), "the datagrams were not held");
    let stopped = Instant::now();
    let (status, counters) = pair.stop_delayer();
    assert!(status.success(), "{status}: {counters}");
    assert!(wait_bounded(&mut receiver, LIMIT).success());
    let waited = stopped.elapsed();
    let got = wait_line(&lines, "got", Duration::from_secs(2));
    assert_eq!(got.split_whitespace().count() - 1, count, "{got}");
    assert!(waited < Duration::from_secs(3), "held packets came {waited:?} after SIGTERM (delay 10 s)");
    assert!(counters.contains(&format!("delayed {count} ")), "{counters}");
}

/// Not a test: the program the tests above run inside a namespace (`TETRAD_DELAY_TEST_ROLE`).
#[test]
#[ignore = "run by the other tests inside a namespace"]
fn helper() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let words: Vec<&str> = role.split_whitespace().collect();
    match words.as_slice() {
        ["connect", address, count] => {
            let address: SocketAddr = address.parse().expect("an address");
            for _ in 0..count.parse::<usize>().expect("a count") {
                let started = Instant::now();
                let result = TcpStream::connect_timeout(&address, Duration::from_secs(3));
                let error = result.expect_err("nothing listens there");
                assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused, "{error}");
                println!("rtt-us {}", started.elapsed().as_micros());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        ["udp-send", address, count, gap_us] => {
            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
            let gap = Duration::from_micros(gap_us.parse().expect("a gap"));
            for number in 0..count.parse::<u64>().expect("a count") {
                socket.send_to(&number.to_be_bytes(), address).expect("send");
                std::thread::sleep(gap);
            }
        }
        ["udp-recv", port, count, idle_ms] => {
            let socket = UdpSocket::bind(format!("0.0.0.0:{port}")).expect("bind");
            socket
                .set_read_timeout(Some(Duration::from_millis(idle_ms.parse().expect("ms"))))
                .expect("timeout");
            println!("ready");
            let count: usize = count.parse().expect("a count");
            let mut got = Vec::new();
            let mut buffer = [0u8; 64];
            while got.len() < count {
                match socket.recv(&mut buffer) {
                    Ok(8) => got.push(u64::from_be_bytes(buffer[..8].try_into().expect("8 bytes"))),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let numbers: Vec<String> = got.iter().map(u64::to_string).collect();
            println!("got {}", numbers.join(" "));
        }
        _ => panic!("unknown role {role:?}"),
    }
}
