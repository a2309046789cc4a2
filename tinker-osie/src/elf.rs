//! What an ELF file says about itself: its machine, the shared libraries it
//! names (`DT_NEEDED`), its program interpreter, and a named section (a kernel
//! module's `.modinfo`). The image's library closure is computed from these,
//! so it is the packages' own libraries that go in, never the build host's.

use crate::{Error, Result};
use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader};

type Header = object::elf::FileHeader64<object::Endianness>;

/// The facts the image builder reads from one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// `e_machine` (62 x86_64, 183 aarch64).
    pub machine: u16,
    /// The shared libraries it names, in order.
    pub needed: Vec<String>,
    /// Its program interpreter (`/lib64/ld-linux-x86-64.so.2`), if dynamic.
    pub interpreter: Option<String>,
}

fn bad(path: &str) -> impl Fn(object::read::Error) -> Error + '_ {
    move |e| Error::Elf {
        path: path.to_string(),
        detail: e.to_string(),
    }
}

/// Whether `data` starts like an ELF file.
pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

/// Reads the machine, `DT_NEEDED` entries and interpreter of a 64-bit ELF file;
/// `path` names it in errors.
pub fn inspect(path: &str, data: &[u8]) -> Result<ElfInfo> {
    let header = Header::parse(data).map_err(bad(path))?;
    let endian = header.endian().map_err(bad(path))?;
    let mut interpreter = None;
    for ph in header.program_headers(endian, data).map_err(bad(path))? {
        if let Some(i) = ph.interpreter(endian, data).map_err(bad(path))? {
            interpreter = Some(String::from_utf8_lossy(i).into_owned());
        }
    }
    let sections = header.sections(endian, data).map_err(bad(path))?;
    let mut needed = Vec::new();
    if let Some((dyns, link)) = sections.dynamic(endian, data).map_err(bad(path))? {
        let strings = sections.strings(endian, data, link).map_err(bad(path))?;
        for d in dyns {
            if d.d_tag(endian) == object::elf::DT_NEEDED {
                let name = d.string(endian, strings).map_err(bad(path))?;
                needed.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Ok(ElfInfo {
        machine: header.e_machine(endian).0,
        needed,
        interpreter,
    })
}

/// The contents of the section `name` (`.modinfo`), if the file has it.
pub fn section<'d>(path: &str, data: &'d [u8], name: &str) -> Result<Option<&'d [u8]>> {
    let header = Header::parse(data).map_err(bad(path))?;
    let endian = header.endian().map_err(bad(path))?;
    let sections = header.sections(endian, data).map_err(bad(path))?;
    match sections.section_by_name(endian, name.as_bytes()) {
        Some((_, s)) => Ok(Some(s.data(endian, data).map_err(bad(path))?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_a_dynamic_elf_for_this_machine() {
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(&exe).unwrap();
        assert!(is_elf(&data));
        let info = inspect("self", &data).unwrap();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(info.machine, object::elf::EM_X86_64.0);
        assert!(
            info.needed.iter().any(|n| n.starts_with("libc.so")),
            "{info:?}"
        );
        assert!(info.interpreter.is_some_and(|i| i.contains("ld-linux")));
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let e = inspect("junk.bin", b"\x7fELF but not really").unwrap_err();
        assert!(
            e.to_string().starts_with("junk.bin: not a usable ELF file"),
            "{e}"
        );
    }
}
