//! The handshake's bytes: the greeting, options as the client sends them, and the
//! server's replies. Pure encode and decode; `handshake.rs` holds the state.
use super::wire::*;

/// Longest name or metadata query accepted (the spec's limit for strings).
pub const MAX_STRING: usize = 4096;
/// Longest option payload read; a longer one is skipped and answered `ERR_TOO_BIG`.
pub const MAX_OPTION_DATA: u32 = 64 * 1024;

/// What the server sends first: `NBDMAGIC`, `IHAVEOPT`, the handshake flags.
pub fn greeting() -> [u8; 18] {
    let mut b = [0u8; 18];
    b[0..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..18].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    b
}

/// The client's flags, or why the client cannot be served: the fixed newstyle
/// handshake is the only one spoken, and flags this server does not know mean a
/// client expecting something it will not get (the spec says to disconnect).
pub fn decode_client_flags(b: [u8; 4]) -> Result<u32, String> {
    let flags = u32::from_be_bytes(b);
    if flags & FLAG_C_FIXED_NEWSTYLE == 0 {
        return Err("client does not speak the fixed newstyle handshake".into());
    }
    if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(format!("client sent unknown handshake flags {flags:#x}"));
    }
    Ok(flags)
}

/// The 16 bytes before an option's data: `IHAVEOPT`, the option, the data length.
pub fn decode_option_header(b: &[u8; 16]) -> Result<(u32, u32), String> {
    let magic = u64::from_be_bytes(b[0..8].try_into().unwrap());
    if magic != IHAVEOPT {
        return Err(format!("option without IHAVEOPT magic ({magic:#x})"));
    }
    Ok((
        u32::from_be_bytes(b[8..12].try_into().unwrap()),
        u32::from_be_bytes(b[12..16].try_into().unwrap()),
    ))
}

/// An option as the server understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption {
    ExportName(String),
    Abort,
    List,
    /// `OPT_INFO` (`go: false`) or `OPT_GO`: an export name and the information
    /// types the client asks for.
    Info {
        go: bool,
        export: String,
        requests: Vec<u16>,
    },
    StructuredReply,
    /// `OPT_LIST_META_CONTEXT` (`set: false`) or `OPT_SET_META_CONTEXT`.
    MetaContext {
        set: bool,
        export: String,
        queries: Vec<String>,
    },
    /// Anything else, `OPT_STARTTLS` included: answered `ERR_UNSUP`.
    Unsupported(u32),
}

/// Decodes option `option` with payload `data`. An error is a malformed payload,
/// answered `ERR_INVALID` with the message; the session goes on.
pub fn decode_option(option: u32, data: &[u8]) -> Result<ClientOption, String> {
    let mut r = Reader { data, at: 0 };
    let opt = match option {
        OPT_EXPORT_NAME => ClientOption::ExportName(string(data)?),
        OPT_ABORT => ClientOption::Abort,
        OPT_LIST | OPT_STRUCTURED_REPLY if !data.is_empty() => {
            return Err(format!(
                "option {option} takes no data, got {} bytes",
                data.len()
            ))
        }
        OPT_LIST => ClientOption::List,
        OPT_STRUCTURED_REPLY => ClientOption::StructuredReply,
        OPT_INFO | OPT_GO => {
            let export = r.string32()?;
            let n = r.u16()?;
            let requests = (0..n).map(|_| r.u16()).collect::<Result<_, _>>()?;
            r.end()?;
            ClientOption::Info {
                go: option == OPT_GO,
                export,
                requests,
            }
        }
        OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
            let export = r.string32()?;
            let n = r.u32()?;
            let queries = (0..n).map(|_| r.string32()).collect::<Result<_, _>>()?;
            r.end()?;
            ClientOption::MetaContext {
                set: option == OPT_SET_META_CONTEXT,
                export,
                queries,
            }
        }
        other => ClientOption::Unsupported(other),
    };
    Ok(opt)
}

fn string(b: &[u8]) -> Result<String, String> {
    if b.len() > MAX_STRING {
        return Err(format!(
            "string of {} bytes (at most {MAX_STRING})",
            b.len()
        ));
    }
    String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".to_string())
}

/// A cursor over an option's payload that names what is short.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.data.len() - self.at < n {
            return Err(format!(
                "option data ends at byte {}, needs {} more",
                self.data.len(),
                n - (self.data.len() - self.at)
            ));
        }
        self.at += n;
        Ok(&self.data[self.at - n..self.at])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn string32(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        if n > MAX_STRING {
            return Err(format!("string of {n} bytes (at most {MAX_STRING})"));
        }
        string(self.take(n)?)
    }
    fn end(&self) -> Result<(), String> {
        match self.data.len() - self.at {
            0 => Ok(()),
            n => Err(format!("{n} bytes of option data past its end")),
        }
    }
}

/// An option reply: magic, the option it answers, the reply type, the data.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&reply.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// `REP_SERVER` data for `OPT_LIST`: the name, then its description.
pub fn server_entry(name: &str, description: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + name.len() + description.len());
    b.extend_from_slice(&(name.len() as u32).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(description.as_bytes());
    b
}

/// `REP_INFO` data of `INFO_EXPORT`: size and transmission flags.
pub fn info_export(size: u64, flags: u16) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..2].copy_from_slice(&INFO_EXPORT.to_be_bytes());
    b[2..10].copy_from_slice(&size.to_be_bytes());
    b[10..12].copy_from_slice(&flags.to_be_bytes());
    b
}

/// `REP_INFO` data of `INFO_NAME` or `INFO_DESCRIPTION`.
pub fn info_text(kind: u16, text: &str) -> Vec<u8> {
    let mut b = kind.to_be_bytes().to_vec();
    b.extend_from_slice(text.as_bytes());
    b
}

/// `REP_INFO` data of `INFO_BLOCK_SIZE`: minimum, preferred and maximum.
pub fn info_block_size(min: u32, preferred: u32, max: u32) -> [u8; 14] {
    let mut b = [0u8; 14];
    b[0..2].copy_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    b[2..6].copy_from_slice(&min.to_be_bytes());
    b[6..10].copy_from_slice(&preferred.to_be_bytes());
    b[10..14].copy_from_slice(&max.to_be_bytes());
    b
}

/// `REP_META_CONTEXT` data: the context's id and name.
pub fn meta_context(id: u32, name: &str) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(name.as_bytes());
    b
}

/// The answer to `OPT_EXPORT_NAME`: size, transmission flags and, unless the client
/// set `NO_ZEROES`, 124 bytes of zeros.
pub fn export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut b = size.to_be_bytes().to_vec();
    b.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        b.resize(b.len() + 124, 0);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_is_the_spec_bytes() {
        let g = greeting();
        assert_eq!(&g[0..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..18], &[0, 3]);
    }

    #[test]
    fn client_flags() {
        assert_eq!(decode_client_flags([0, 0, 0, 3]), Ok(3));
        assert_eq!(decode_client_flags([0, 0, 0, 1]), Ok(1));
        assert!(decode_client_flags([0, 0, 0, 0]).is_err());
        assert!(decode_client_flags([0, 0, 0, 7]).is_err());
    }

    fn header(option: u32, len: u32) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(b"IHAVEOPT");
        b[8..12].copy_from_slice(&option.to_be_bytes());
        b[12..16].copy_from_slice(&len.to_be_bytes());
        b
    }

    #[test]
    fn option_header() {
        assert_eq!(decode_option_header(&header(7, 12)), Ok((7, 12)));
        let mut bad = header(7, 12);
        bad[0] = b'X';
        assert!(decode_option_header(&bad).is_err());
    }

    #[test]
    fn go_with_requests() {
        // name length 3, "web", 2 requests: INFO_BLOCK_SIZE, INFO_NAME
        let data = [0, 0, 0, 3, b'w', b'e', b'b', 0, 2, 0, 3, 0, 1];
        assert_eq!(
            decode_option(OPT_GO, &data),
            Ok(ClientOption::Info {
                go: true,
                export: "web".into(),
                requests: vec![3, 1]
            })
        );
        assert!(decode_option(OPT_GO, &data[..12])
            .unwrap_err()
            .contains("needs 1 more"));
        let mut long = data.to_vec();
        long.push(0);
        assert!(decode_option(OPT_INFO, &long)
            .unwrap_err()
            .contains("past its end"));
        // A name length beyond the payload is short data, not a panic.
        assert!(decode_option(OPT_GO, &[0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn meta_context_queries() {
        let mut data = vec![0, 0, 0, 1, b'a', 0, 0, 0, 1, 0, 0, 0, 15];
        data.extend_from_slice(b"base:allocation");
        assert_eq!(
            decode_option(OPT_SET_META_CONTEXT, &data),
            Ok(ClientOption::MetaContext {
                set: true,
                export: "a".into(),
                queries: vec!["base:allocation".into()]
            })
        );
    }

    #[test]
    fn options_without_data() {
        assert_eq!(decode_option(OPT_LIST, &[]), Ok(ClientOption::List));
        assert!(decode_option(OPT_LIST, &[1]).is_err());
        assert!(decode_option(OPT_STRUCTURED_REPLY, &[1]).is_err());
        assert_eq!(decode_option(OPT_ABORT, &[]), Ok(ClientOption::Abort));
        assert_eq!(
            decode_option(OPT_STARTTLS, &[]),
            Ok(ClientOption::Unsupported(OPT_STARTTLS))
        );
        assert_eq!(
            decode_option(99, &[1, 2]),
            Ok(ClientOption::Unsupported(99))
        );
        assert_eq!(
            decode_option(OPT_EXPORT_NAME, b"db"),
            Ok(ClientOption::ExportName("db".into()))
        );
        assert!(decode_option(OPT_EXPORT_NAME, &[0xff]).is_err());
    }

    #[test]
    fn replies_are_the_spec_bytes() {
        let r = option_reply(OPT_LIST, REP_SERVER, &server_entry("web", ""));
        assert_eq!(&r[0..8], &[0, 3, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9]);
        assert_eq!(&r[8..12], &[0, 0, 0, 3]);
        assert_eq!(&r[12..16], &[0, 0, 0, 2]);
        assert_eq!(&r[16..20], &[0, 0, 0, 7]);
        assert_eq!(&r[20..], &[0, 0, 0, 3, b'w', b'e', b'b']);
        assert_eq!(
            info_export(0x1_0000_0000, 0x10d),
            [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0x01, 0x0d]
        );
        assert_eq!(
            info_block_size(1, 4096, 1 << 25),
            [0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 2, 0, 0, 0]
        );
        assert_eq!(
            export_name_reply(512, 1, true),
            [0, 0, 0, 0, 0, 0, 2, 0, 0, 1]
        );
        assert_eq!(export_name_reply(512, 1, false).len(), 134);
        assert_eq!(REP_ERR_UNSUP.to_be_bytes(), [0x80, 0, 0, 1]);
    }
}
