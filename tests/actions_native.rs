//! The native actions against real block devices (loop devices, ext4 and vfat)
//! and a real HTTP server (ours): image2disk with every compression and a
//! checksum, refusing a missing, plain or mounted destination; writefile with
//! mode and owner, inside the image whatever its symlinks say; cexec in a
//! chroot, its mounts released when it is cancelled or dropped; and kexec,
//! whose jump waits for the report (a stub `kexec` on PATH records what it was
//! asked).

#[path = "support/common.rs"]
mod common;
use common::{require_real, sh};

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use tinker::actions::{Builtin, FinalStep, NativeRuntime};
use tinker::boot::http::{HttpConfig, HttpServer};
use tinker::boot::tftp::FileSource;
use tinker::core::runtime::{ActionOutcome, ActionRuntime, ActionSpec, CancelToken, CollectOutput};
use tinker::store::MemoryStore;

fn can_loop() -> bool {
    let ok = Command::new("sh").args(["-c", "[ \"$(id -u)\" = 0 ] && command -v losetup && command -v mkfs.ext4 && command -v mkfs.vfat && command -v sfdisk && command -v mcopy"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !require_real(),
            "root, losetup, mkfs.ext4, mkfs.vfat, sfdisk and mtools are required (TINKER_REQUIRE_REAL=1)"
        );
        eprintln!("skipped: needs root and loop devices");
    }
    ok
}

/// A disk image with one partition, on a loop device; detached on drop.
struct LoopDisk {
    dev: String,
    _dir: tempfile::TempDir,
}

impl LoopDisk {
    fn new(fs: &str) -> LoopDisk {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        sh(&format!(
            "truncate -s 64M {0} && echo ',,L' | sfdisk -q {0}",
            img.display()
        ));
        let dev = sh(&format!("losetup -fP --show {}", img.display()));
        // udev may be absent: wait for the partition node, make it if needed.
        sh(&format!(
            "for i in $(seq 50); do [ -b {dev}p1 ] && break; sleep 0.1; done; [ -b {dev}p1 ] || partx -a {dev}"
        ));
        let mk = if fs == "vfat" {
            "mkfs.vfat"
        } else {
            "mkfs.ext4 -q -F"
        };
        sh(&format!("{mk} {dev}p1 >/dev/null"));
        LoopDisk { dev, _dir: dir }
    }
    fn part(&self) -> String {
        format!("{}p1", self.dev)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
    }
}

/// The mount points under `dir` in this process's mount namespace.
fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&dir))
        .map(str::to_string)
        .collect()
}

fn spec(image: &str, env: &[(&str, &str)]) -> ActionSpec {
    ActionSpec {
        workflow: "default/wf".into(),
        name: image.into(),
        image: image.into(),
        command: vec![],
        environment: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        volumes: vec![],
        pid: None,
        timeout: Some(std::time::Duration::from_secs(120)),
    }
}

async fn run(rt: &NativeRuntime, s: &ActionSpec) -> (ActionOutcome, Vec<String>) {
    let out = CollectOutput::default();
    let r = rt.run(s, &out, &CancelToken::new()).await.unwrap();
    let lines = out
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(_, l)| l.clone())
        .collect();
    (r, lines)
}

/// Our HTTP server over a directory of images, on loopback.
async fn image_server(dir: &std::path::Path) -> u16 {
    let store = Arc::new(MemoryStore::new());
    let server = HttpServer::new(HttpConfig {
        assets: Some(FileSource::directory(dir).unwrap()),
        ..HttpConfig::new(store.clone())
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(server.serve(listener, std::future::pending()));
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image2disk_streams_every_compression_onto_a_block_device() {
    if !can_loop() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // 8 MiB that compress a little, like a disk image.
    sh(&format!(
        "head -c 4194304 /dev/urandom > {d}/img.raw && head -c 4194304 /dev/zero >> {d}/img.raw"
    ));
    sh(&format!(
        "cd {d} && gzip -k img.raw && xz -k -T1 img.raw && zstd -q -k img.raw && bzip2 -k img.raw"
    ));
    let sha = sh(&format!("sha256sum {d}/img.raw.gz | cut -d' ' -f1"));
    let port = image_server(dir.path()).await;
    let disk = LoopDisk::new("ext4");
    let rt = NativeRuntime::new();
    let want = std::fs::read(dir.path().join("img.raw")).unwrap();
    for (file, compressed) in [
        ("img.raw", "false"),
        ("img.raw.gz", "true"),
        ("img.raw.xz", "true"),
        ("img.raw.zst", "true"),
        ("img.raw.bz2", "true"),
    ] {
        sh(&format!(
            "dd if=/dev/zero of={} bs=1M count=9 status=none",
            disk.dev
        ));
        let url = format!("http://127.0.0.1:{port}/assets/{file}");
        let (r, lines) = run(
            &rt,
            &spec(
                "quay.io/tinkerbell/actions/image2disk:latest",
                &[
                    ("IMG_URL", &url),
                    ("DEST_DISK", &disk.dev),
                    ("COMPRESSED", compressed),
                ],
            ),
        )
        .await;
        assert_eq!(r, ActionOutcome::Success, "{file}: {lines:?}");
        let got = sh(&format!(
            "head -c {} {} | sha256sum | cut -d' ' -f1",
            want.len(),
            disk.dev
        ));
        assert_eq!(
            got,
            sh(&format!("sha256sum {d}/img.raw | cut -d' ' -f1")),
            "{file}: the bytes on the disk"
        );
        assert!(lines.iter().any(|l| l.contains("done")), "{lines:?}");
    }
    // A checksum that matches passes; one that does not fails the action.
    let url = format!("http://127.0.0.1:{port}/assets/img.raw.gz");
    let good = format!("sha256:{sha}");
    let (r, _) = run(
        &rt,
        &spec(
            "image2disk",
            &[
                ("IMG_URL", &url),
                ("DEST_DISK", &disk.dev),
                ("COMPRESSED", "true"),
                ("CHECKSUM", &good),
            ],
        ),
    )
    .await;
    assert_eq!(r, ActionOutcome::Success);
    let (r, _) = run(
        &rt,
        &spec(
            "image2disk",
            &[
                ("IMG_URL", &url),
                ("DEST_DISK", &disk.dev),
                ("COMPRESSED", "true"),
                ("CHECKSUM", "sha256:00"),
            ],
        ),
    )
    .await;
    assert!(
        matches!(r, ActionOutcome::Failed { ref message, .. } if message.contains("checksum mismatch")),
        "{r:?}"
    );
    // A missing image fails with the HTTP status.
    let (r, _) = run(
        &rt,
        &spec(
            "image2disk",
            &[
                ("IMG_URL", &format!("http://127.0.0.1:{port}/assets/nope")),
                ("DEST_DISK", &disk.dev),
            ],
        ),
    )
    .await;
    assert!(
        matches!(r, ActionOutcome::Failed { ref message, .. } if message.contains("404")),
        "{r:?}"
    );
    // A DEST_DISK that does not exist (a SATA name on an NVMe-only machine) is
    // refused before anything is written, and nothing is created in /dev.
    let missing = format!("/dev/tinker-test-no-disk-{}", std::process::id());
    let (r, _) = run(
        &rt,
        &spec("image2disk", &[("IMG_URL", &url), ("DEST_DISK", &missing)]),
    )
    .await;
    assert!(
        matches!(r, ActionOutcome::Failed { ref message, .. } if message.contains("does not exist")),
        "{r:?}"
    );
    assert!(
        !std::path::Path::new(&missing).exists(),
        "a file was made in /dev"
    );
    // A regular file is not a disk either (unless the runtime allows files).
    let plain = dir.path().join("plain.img");
    std::fs::write(&plain, b"").unwrap();
    let (r, _) = run(
        &rt,
        &spec(
            "image2disk",
            &[("IMG_URL", &url), ("DEST_DISK", plain.to_str().unwrap())],
        ),
    )
    .await;
    assert!(
        matches!(r, ActionOutcome::Failed { ref message, .. } if message.contains("not a block device")),
        "{r:?}"
    );
    // A disk in use is refused: one of its partitions mounted, or the
    // partition itself.
    let used = LoopDisk::new("ext4");
    let mnt = tempfile::tempdir().unwrap();
    sh(&format!("mount {} {}", used.part(), mnt.path().display()));
    std::fs::write(mnt.path().join("keep"), "precious").unwrap();
    for dest in [used.dev.clone(), used.part()] {
        let (r, _) = run(
            &rt,
            &spec("image2disk", &[("IMG_URL", &url), ("DEST_DISK", &dest)]),
        )
        .await;
        assert!(
            matches!(r, ActionOutcome::Failed { ref message, .. } if message.contains("is in use") && message.contains("is mounted on")),
            "{dest}: {r:?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(mnt.path().join("keep")).unwrap(),
        "precious"
    );
    sh(&format!("umount {}", mnt.path().display()));
    // A missing variable of the contract fails and names it.
    let (r, _) = run(&rt, &spec("image2disk", &[("IMG_URL", &url)])).await;
    assert!(
        matches!(r, ActionOutcome::Failed { ref message, .. } if message.contains("DEST_DISK")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writefile_sets_contents_mode_and_owner_on_ext4_and_vfat() {
    if !can_loop() {
        return;
    }
    let rt = NativeRuntime::new();
    let disk = LoopDisk::new("ext4");
    let part = disk.part();
    let env = [
        ("DEST_DISK", part.as_str()),
        ("FS_TYPE", "ext4"),
        ("DEST_PATH", "/etc/cloud/cloud.cfg.d/10_tinkerbell.cfg"),
        ("CONTENTS", "datasource: Ec2\n"),
        ("UID", "1000"),
        ("GID", "1001"),
        ("MODE", "0600"),
        ("DIRMODE", "0700"),
    ];
    let (r, lines) = run(
        &rt,
        &spec("quay.io/tinkerbell/actions/writefile:latest", &env),
    )
    .await;
    assert_eq!(r, ActionOutcome::Success, "{lines:?}");
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().display();
    sh(&format!("mount {part} {m}"));
    let stat = sh(&format!(
        "stat -c '%a %u %g' {m}/etc/cloud/cloud.cfg.d/10_tinkerbell.cfg; stat -c '%a' {m}/etc/cloud; cat {m}/etc/cloud/cloud.cfg.d/10_tinkerbell.cfg"
    ));
    sh(&format!("umount {m}"));
    assert_eq!(stat, "600 1000 1001\n700\ndatasource: Ec2");

    let vfat = LoopDisk::new("vfat");
    let vpart = vfat.part();
    let env = [
        ("DEST_DISK", vpart.as_str()),
        ("FS_TYPE", "vfat"),
        ("DEST_PATH", "/EFI/tinker/grub.cfg"),
        ("CONTENTS", "set timeout=1\n"),
        ("MODE", "0644"),
    ];
    let (r, lines) = run(&rt, &spec("writefile", &env)).await;
    assert_eq!(r, ActionOutcome::Success, "{lines:?}");
    // Read back with mtools, an independent FAT implementation (this machine's
    // kernel has no FAT driver to mount it with).
    assert_eq!(
        sh(&format!("mtype -i {vpart} ::/EFI/tinker/grub.cfg")),
        "set timeout=1"
    );
    // The image's absolute symlinks point into the image: Debian's
    // /var/run -> /run must not send the write to this machine's /run.
    let name = format!("tinker-test-{}", std::process::id());
    sh(&format!(
        "mount {part} {m} && mkdir -p {m}/var {m}/run && ln -s /run {m}/var/run && umount {m}"
    ));
    let dest = format!("/var/run/{name}");
    let env = [
        ("DEST_DISK", part.as_str()),
        ("FS_TYPE", "ext4"),
        ("DEST_PATH", dest.as_str()),
        ("CONTENTS", "inside the image\n"),
    ];
    let (r, lines) = run(&rt, &spec("writefile", &env)).await;
    let on_host = std::path::Path::new("/run").join(&name);
    let leaked = on_host.exists();
    let _ = std::fs::remove_file(&on_host);
    assert_eq!(r, ActionOutcome::Success, "{lines:?}");
    assert!(
        !leaked,
        "the write followed the image's symlink out to this machine's /run"
    );
    let inside = sh(&format!(
        "mount {part} {m} && cat {m}/run/{name}; umount {m}"
    ));
    assert_eq!(inside, "inside the image");
    // Paths that climb out of the partition are refused.
    let env = [
        ("DEST_DISK", part.as_str()),
        ("FS_TYPE", "ext4"),
        ("DEST_PATH", "/../../etc/passwd"),
        ("CONTENTS", "x"),
    ];
    let (r, _) = run(&rt, &spec("writefile", &env)).await;
    assert!(matches!(r, ActionOutcome::Failed { .. }), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cexec_runs_in_the_installed_system_and_kexec_waits_for_the_report() {
    if !can_loop() {
        return;
    }
    let disk = LoopDisk::new("ext4");
    let part = disk.part();
    // An "installed system": busybox-static as /bin/sh, a kernel and an initrd.
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().display();
    sh(&format!(
        "mount {part} {m} && mkdir -p {m}/bin {m}/boot && d=$(mktemp -d) && cd $d && apt-get download busybox-static >/dev/null && dpkg -x busybox-static_*.deb x && cp x/bin/busybox {m}/bin/ && ln -s busybox {m}/bin/sh && ln -s busybox {m}/bin/echo && ln -s busybox {m}/bin/sleep && rm -rf $d && echo K > {m}/boot/vmlinuz && echo I > {m}/boot/initrd.img && umount {m}"
    ));
    let rt = NativeRuntime::new();
    let env = [
        ("BLOCK_DEVICE", part.as_str()),
        ("FS_TYPE", "ext4"),
        ("CHROOT", "y"),
        ("DEFAULT_INTERPRETER", "/bin/sh -c"),
        ("CMD_LINE", "echo inside > /marker && echo ran in $(pwd)"),
    ];
    let (r, lines) = run(&rt, &spec("quay.io/tinkerbell/actions/cexec:latest", &env)).await;
    assert_eq!(r, ActionOutcome::Success, "{lines:?}");
    assert!(lines.iter().any(|l| l == "ran in /"), "{lines:?}");
    sh(&format!("mount {part} {m}"));
    let marker = sh(&format!("cat {m}/marker"));
    sh(&format!("umount {m}"));
    assert_eq!(marker, "inside", "the command ran inside the partition");

    // An empty interpreter is a clear error, and the partition is not left
    // mounted.
    let work = tempfile::tempdir().unwrap();
    let rt_work = NativeRuntime::new()
        .with_work_dir(work.path())
        .with_grace(std::time::Duration::from_secs(1));
    let mut env_empty = env.to_vec();
    env_empty.retain(|(k, _)| *k != "DEFAULT_INTERPRETER");
    env_empty.push(("DEFAULT_INTERPRETER", ""));
    let (r, _) = run(&rt_work, &spec("cexec", &env_empty)).await;
    assert!(
        matches!(r, ActionOutcome::Failed { ref message, .. } if message.contains("DEFAULT_INTERPRETER")),
        "{r:?}"
    );
    assert_eq!(mounts_under(work.path()), Vec::<String>::new());

    // A hanging cexec (in the chroot, with a child in the background) that is
    // cancelled: its processes are stopped, then the binds and the partition
    // are unmounted, and the report says so.
    let hang = [
        ("BLOCK_DEVICE", part.as_str()),
        ("FS_TYPE", "ext4"),
        ("CHROOT", "y"),
        (
            "CMD_LINE",
            "sleep 1000 & echo started > /started; sleep 1000",
        ),
    ];
    let cancel = CancelToken::new();
    let (rt2, c2, s2) = (rt_work.clone(), cancel.clone(), spec("cexec", &hang));
    let task = tokio::spawn(async move { rt2.run(&s2, &CollectOutput::default(), &c2).await });
    for _ in 0..600 {
        if mounts_under(work.path()).len() == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        mounts_under(work.path()).len(),
        4,
        "the partition and its three binds"
    );
    // Let the command start inside.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    cancel.cancel();
    let r = task.await.unwrap().unwrap();
    assert_eq!(
        mounts_under(work.path()),
        Vec::<String>::new(),
        "mounts left behind"
    );
    match r {
        ActionOutcome::Failed { message, .. } => {
            assert!(
                message.starts_with("cancelled; cleanup: process group"),
                "{message}"
            );
            assert_eq!(message.matches("unmounted").count(), 4, "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The same when the future running it is dropped (a caller giving up):
    // the guards unmount.
    let s3 = spec("cexec", &hang);
    let out = CollectOutput::default();
    let cancel = CancelToken::new();
    let dropped = rt_work.run(&s3, &out, &cancel);
    tokio::select! {
        _ = dropped => panic!("it ended by itself"),
        () = async {
            while mounts_under(work.path()).len() < 4 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        } => {}
    }
    assert_eq!(
        mounts_under(work.path()),
        Vec::<String>::new(),
        "mounts left behind"
    );

    // kexec: a stub on PATH records its calls; `run` only loads, the jump is the
    // final step, taken after the report.
    let bin = tempfile::tempdir().unwrap();
    let log = bin.path().join("kexec.log");
    std::fs::write(
        bin.path().join("kexec"),
        format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
    )
    .unwrap();
    sh(&format!("chmod +x {}/kexec", bin.path().display()));
    let stub = bin.path().join("kexec");
    let rt = rt.with_programs(&stub, "/bin/false");
    let env = [
        ("BLOCK_DEVICE", part.as_str()),
        ("FS_TYPE", "ext4"),
        ("KERNEL_PATH", "/boot/vmlinuz"),
        ("INITRD_PATH", "/boot/initrd.img"),
        ("CMD_LINE", "root=/dev/sda1 ro"),
    ];
    // A kernel path that climbs out of the partition is refused.
    for (key, bad) in [
        ("KERNEL_PATH", "/boot/../../../etc/shadow"),
        ("INITRD_PATH", "/../initrd"),
    ] {
        let mut e = env.to_vec();
        e.retain(|(k, _)| *k != key);
        e.push((key, bad));
        let (r, _) = run(&rt, &spec("kexec", &e)).await;
        assert!(
            matches!(r, ActionOutcome::Failed { ref message, .. } if message.contains(key) && message.contains("'..'")),
            "{r:?}"
        );
    }
    assert!(!log.exists(), "kexec ran for a path that climbs out");
    let s = spec("quay.io/tinkerbell/actions/kexec:latest", &env);
    let (r, _) = run(&rt, &s).await;
    assert_eq!(r, ActionOutcome::Success);
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.starts_with("-l ")
            && calls.contains("--command-line=root=/dev/sda1 ro")
            && calls.contains("--initrd="),
        "{calls}"
    );
    assert!(
        !calls.contains("-e"),
        "the jump happened before the report: {calls}"
    );
    assert_eq!(
        rt.final_step(&s),
        Some(FinalStep::KexecExecute(stub.clone()))
    );
    rt.final_step(&s).unwrap().take().await.unwrap();
    assert!(std::fs::read_to_string(&log).unwrap().lines().last() == Some("-e"));
    assert_eq!(
        rt.builtin("quay.io/tinkerbell/actions/image2disk:v1.0.0"),
        Some(Builtin::Image2Disk)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtins_run_in_docker_as_a_locally_imported_image() {
    if !can_loop() {
        return;
    }
    if !Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(
            !require_real(),
            "a Docker engine is required (TINKER_REQUIRE_REAL=1)"
        );
        return;
    }
    // The tinker-action program, its libraries and busybox's mount, as an image.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/tinker-action");
    assert!(bin.exists(), "cargo test builds the tinker-action example");
    let image = "tinker-test/actions:1";
    sh(&format!(
        "docker rmi -f tinker-test/actions:1 >/dev/null 2>&1; d=$(mktemp -d) && cd $d && mkdir -p root/bin root/tmp && cp {b} root/tinker-action && for l in $(ldd {b} | grep -o '/[^ ]*'); do mkdir -p root$(dirname $l) && cp -L $l root$l; done && \
         apt-get download busybox-static >/dev/null && dpkg -x busybox-static_*.deb x && cp x/bin/busybox root/bin/ && for a in sh mount umount; do ln -s busybox root/bin/$a; done && \
         tar -C root -c . | docker import - {image} >/dev/null && rm -rf $d",
        b = bin.display()
    ));
    let disk = LoopDisk::new("ext4");
    let part = disk.part();
    let docker = tinker::actions::DockerRuntime::connect().await.unwrap();
    let mut s = spec(
        image,
        &[
            ("DEST_DISK", part.as_str()),
            ("FS_TYPE", "ext4"),
            ("DEST_PATH", "/etc/hostname"),
            ("CONTENTS", "from-a-container\n"),
            ("MODE", "0640"),
            ("PATH", "/bin"),
        ],
    );
    s.command = vec!["/tinker-action".into(), "writefile".into()];
    let out = CollectOutput::default();
    let r = docker.run(&s, &out, &CancelToken::new()).await.unwrap();
    assert_eq!(r, ActionOutcome::Success, "{:?}", out.0.lock().unwrap());
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().display();
    let got = sh(&format!(
        "mount {part} {m} && stat -c %a {m}/etc/hostname && cat {m}/etc/hostname; umount {m}"
    ));
    assert_eq!(got, "640\nfrom-a-container");
}
