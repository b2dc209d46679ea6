//! The simulated TEE's attester: asks the host's simulated secure processor over the
//! virtio-serial port named `org.nacre.sp` (framing in `nacre_wire::sp`). The answer is
//! untrusted input: bounded, strictly parsed, and REPORT_DATA is checked to be ours.
//!
//! Running the serving stack as a host process (benchmarks, tests), the same protocol goes over
//! the secure processor's Unix socket instead (`sim_socket` in the configuration).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nacre_wire::Evidence;
use nacre_wire::snp::SnpReport;
use nacre_wire::sp::{
    RESPONSE_HEADER_LEN, Response, decode_response_body, decode_response_header, encode_request,
};

use super::{AttestError, Attester};

pub const PORT_NAME: &str = "org.nacre.sp";

/// Finds the `/dev/vportNpM` device of the named port through sysfs.
pub fn find_port(sysfs: &Path, dev: &Path, name: &str) -> Result<PathBuf, AttestError> {
    let class = sysfs.join("class/virtio-ports");
    let entries =
        std::fs::read_dir(&class).map_err(|e| AttestError::NoDevice(format!("{}: {e}", class.display())))?;
    for entry in entries.flatten() {
        let port_name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if port_name.trim() == name {
            return Ok(dev.join(entry.file_name()));
        }
    }
    Err(AttestError::NoDevice(format!("no virtio port named {name}")))
}

/// `O_NONBLOCK` on x86-64 Linux: every port operation has a deadline, so a host that never
/// answers (or reconnects mid-request) cannot hang the guest.
const O_NONBLOCK: i32 = 0o4000;
/// How long one report request may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The two ends the framing runs over. Both are non-blocking.
enum Port {
    /// The guest's virtio-serial port: reading 0 bytes means the host side is not connected yet.
    Virtio(File),
    /// The host's socket: reading 0 bytes means it closed.
    Unix(UnixStream),
}

impl Port {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Port::Virtio(f) => f.read(buf),
            Port::Unix(s) => s.read(buf),
        }
    }
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Port::Virtio(f) => f.write(buf),
            Port::Unix(s) => s.write(buf),
        }
    }
}

pub struct SimAttester {
    port: Port,
}

impl SimAttester {
    /// The host's simulated secure processor at a Unix socket (host-process mode).
    pub fn connect(socket: &Path) -> Result<Self, AttestError> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| AttestError::NoDevice(format!("{}: {e}", socket.display())))?;
        stream.set_nonblocking(true).map_err(|e| AttestError::Io(e.to_string()))?;
        Ok(SimAttester { port: Port::Unix(stream) })
    }

    pub fn open() -> Result<Self, AttestError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = find_port(Path::new("/sys"), Path::new("/dev"), PORT_NAME)?;
        let port = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(&path)
            .map_err(|e| AttestError::NoDevice(format!("{}: {e}", path.display())))?;
        Ok(SimAttester { port: Port::Virtio(port) })
    }

    /// Discards bytes left from an earlier, abandoned exchange.
    fn drain(&mut self) {
        let mut junk = [0u8; 4096];
        while matches!(self.port.read(&mut junk), Ok(n) if n > 0) {}
    }

    fn write_all(&mut self, mut buf: &[u8], deadline: Instant) -> Result<(), AttestError> {
        while !buf.is_empty() {
            match self.port.write(buf) {
                Ok(0) => return Err(AttestError::Io("port closed".into())),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => wait(deadline)?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(AttestError::Io(e.to_string())),
            }
        }
        Ok(())
    }

    fn read_exact(&mut self, mut buf: &mut [u8], deadline: Instant) -> Result<(), AttestError> {
        while !buf.is_empty() {
            match self.port.read(buf) {
                Ok(0) if matches!(self.port, Port::Unix(_)) => {
                    return Err(AttestError::Io("the secure processor closed the connection".into()));
                }
                // The host side is not connected (yet): like "nothing yet".
                Ok(0) => wait(deadline)?,
                Ok(n) => buf = &mut buf[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => wait(deadline)?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(AttestError::Io(e.to_string())),
            }
        }
        Ok(())
    }
}

fn wait(deadline: Instant) -> Result<(), AttestError> {
    if Instant::now() >= deadline {
        return Err(AttestError::Io("the secure processor did not answer in time".into()));
    }
    std::thread::sleep(Duration::from_millis(5));
    Ok(())
}

impl Attester for SimAttester {
    fn attest(&mut self, report_data: &[u8; 64]) -> Result<Evidence, AttestError> {
        let deadline = Instant::now() + DEADLINE;
        self.drain();
        self.write_all(&encode_request(report_data), deadline)?;
        let mut header = [0u8; RESPONSE_HEADER_LEN];
        self.read_exact(&mut header, deadline)?;
        let (status, len) =
            decode_response_header(&header).map_err(|e| AttestError::Malformed(e.to_string()))?;
        let mut body = vec![0u8; len];
        self.read_exact(&mut body, deadline)?;
        match decode_response_body(status, &body).map_err(|e| AttestError::Malformed(e.to_string()))? {
            Response::Refused(reason) => Err(AttestError::Refused(reason)),
            Response::Report(evidence) => {
                let parsed =
                    SnpReport::parse(&evidence.report).map_err(|e| AttestError::Malformed(e.to_string()))?;
                if &parsed.report.report_data != report_data {
                    return Err(AttestError::Malformed("the report binds other REPORT_DATA".into()));
                }
                Ok(evidence)
            }
        }
    }
}
