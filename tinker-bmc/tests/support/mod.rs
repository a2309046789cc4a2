//! Real BMC emulators for the tests: OpenIPMI's `ipmi_sim` and sushy-tools'
//! `sushy-emulator`, each started on loopback in a temporary directory and stopped
//! when dropped. A missing emulator skips the test, or fails it when
//! `TINKER_REQUIRE_REAL=1` (CI).

#![allow(dead_code)] // each test file uses a part

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const USER: &str = "admin";
pub const PASSWORD: &str = "s3cret-Pa55word";

pub use tinker_core::testing::require_real;

/// `None` (and a note) when a tool is missing and the run does not require it.
pub fn find(tool: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .map(PathBuf::from)
        .chain(extra_dirs.iter().map(PathBuf::from));
    for d in dirs {
        let p = d.join(tool);
        if p.is_file() {
            return Some(p);
        }
    }
    if require_real() {
        panic!("{tool} is required (TINKER_REQUIRE_REAL=1) but not installed; run .ci/run");
    }
    eprintln!("skipped: {tool} is not installed");
    None
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running emulator; killed on drop.
pub struct Emulator {
    child: Child,
    pub port: u16,
    pub dir: TempDir,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chassis script ipmi_sim calls: keeps power and boot device in files.
const CHASSIS_SCRIPT: &str = r#"#!/bin/sh
d="$(dirname "$0")"
echo "$@" >> "$d/calls.log"
op=$2; shift 2
if [ "$op" = get ]; then
  for p in "$@"; do
    case $p in
      power) echo "power:$(cat "$d/power" 2>/dev/null || echo 0)";;
      boot) echo "boot:$(cat "$d/boot" 2>/dev/null || echo default)";;
    esac
  done
else
  case $1 in
    power) echo "$2" > "$d/power";;
    reset) echo 1 > "$d/power";;
    shutdown) echo 0 > "$d/power";;
    boot) echo "$2" > "$d/boot";;
  esac
fi
"#;

impl Emulator {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Starts `ipmi_sim` on 127.0.0.1 with users `admin` (administrator) and the
/// chassis script above.
pub fn ipmi_sim() -> Option<Emulator> {
    let bin = find("ipmi_sim", &["/usr/bin", "/usr/sbin"])?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let script = dir.path().join("chassis.sh");
    std::fs::write(&script, CHASSIS_SCRIPT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lan = format!(
        r#"name "tinker-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{} 0x20"
  user 1 true  ""      "test"   user   10 none md2 md5 straight
  user 2 true  "{USER}" "{PASSWORD}" admin  10 none md2 md5 straight
"#,
        script.display()
    );
    std::fs::write(dir.path().join("lan.conf"), lan).unwrap();
    std::fs::write(
        dir.path().join("sim.emu"),
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let child = Command::new(bin)
        .args(["-c", "lan.conf", "-f", "sim.emu", "-s", "state", "-n"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ipmi_sim");
    let emu = Emulator { child, port, dir };
    // Ready when ipmitool gets an answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ipmitool(&emu, &["chassis", "power", "status"]).is_some() {
            return Some(emu);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("ipmi_sim did not come up on port {port}");
}

/// Runs `ipmitool -I lanplus -C 3` against the emulator; its stdout, or `None` on failure.
pub fn ipmitool(emu: &Emulator, args: &[&str]) -> Option<String> {
    let bin = find("ipmitool", &["/usr/bin"])?;
    let port = emu.port.to_string();
    let out = Command::new(bin)
        .args([
            "-I",
            "lanplus",
            "-C",
            "3",
            "-H",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            USER,
            "-P",
            PASSWORD,
            "-N",
            "1",
            "-R",
            "2",
        ])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// The python of the virtualenv that holds sushy-tools.
fn sushy_venv_bin() -> Vec<String> {
    let mut dirs = vec![];
    if let Ok(v) = std::env::var("TINKER_SUSHY_VENV") {
        dirs.push(format!("{v}/bin"));
    }
    dirs.push("/opt/tinker-venv/bin".into());
    dirs
}

/// Starts `sushy-emulator --fake` on 127.0.0.1 with basic auth (`admin`), over
/// HTTPS with a certificate from a private CA when `tls`. Returns the emulator
/// and, with TLS, the CA certificate (PEM).
pub fn sushy(tls: bool) -> Option<(Emulator, Option<Vec<u8>>)> {
    let dirs = sushy_venv_bin();
    let dir_refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    let bin = find("sushy-emulator", &dir_refs)?;
    let python = bin.parent().unwrap().join("python");
    let dir = tempfile::tempdir().unwrap();
    let hash = Command::new(&python)
        .args(["-c", &format!("import bcrypt;print(bcrypt.hashpw(b'{PASSWORD}', bcrypt.gensalt(rounds=4)).decode())")])
        .output()
        .expect("bcrypt in the sushy virtualenv");
    assert!(
        hash.status.success(),
        "bcrypt: {}",
        String::from_utf8_lossy(&hash.stderr)
    );
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("{USER}:{}", String::from_utf8_lossy(&hash.stdout).trim()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("conf.py"),
        format!("SUSHY_EMULATOR_AUTH_FILE = '{}'\n", htpasswd.display()),
    )
    .unwrap();
    let port = free_tcp_port();
    let mut cmd = Command::new(&bin);
    // sushy's fake driver keeps its state under the temporary directory, shared by
    // every emulator on the machine: give each its own, or concurrent tests see
    // each other's systems.
    cmd.env("TMPDIR", dir.path());
    cmd.args([
        "--fake",
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--config",
        "conf.py",
    ]);
    let mut cert = None;
    if tls {
        // A private CA and a server certificate it signs, as a BMC vendor's would be.
        let openssl = |args: &[&str]| {
            let ok = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl");
            assert!(ok.success(), "openssl {args:?} failed");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Tinker test BMC CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(dir.path().join("ext.cnf"), "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        cmd.args(["--ssl-certificate", "cert.pem", "--ssl-key", "key.pem"]);
        cert = Some(std::fs::read(dir.path().join("ca.pem")).unwrap());
    }
    let child = cmd
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("sushy.log")).unwrap())
        .spawn()
        .expect("start sushy-emulator");
    let emu = Emulator { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((emu, cert));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "sushy-emulator did not come up: {}",
        std::fs::read_to_string(emu.path("sushy.log")).unwrap_or_default()
    );
}

/// A plain GET of a Redfish path with curl (an independent client), JSON back.
pub fn curl_json(base: &str, path: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args([
            "-sk",
            "-u",
            &format!("{USER}:{PASSWORD}"),
            &format!("{base}{path}"),
        ])
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("curl {path}: {}", String::from_utf8_lossy(&out.stdout)))
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
