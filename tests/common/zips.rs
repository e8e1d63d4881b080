//! Writing zip archives as a user would hand them to lamina.

use std::fs;
use std::io::Write;
use std::path::Path;

pub enum ZipItem<'a> {
    /// name, unix permissions, content
    File(&'a str, u32, &'a [u8]),
    /// name (a trailing `/` is added), unix permissions
    Dir(&'a str, u32),
    /// name, target (stored as the content, mode 0o120777)
    Symlink(&'a str, &'a str),
}

pub fn write_zip(path: &Path, items: &[ZipItem]) {
    use zip::CompressionMethod;
    use zip::write::SimpleFileOptions;
    let file = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut z = zip::ZipWriter::new(file);
    for item in items {
        match item {
            ZipItem::File(name, mode, data) => {
                let opts = SimpleFileOptions::default()
                    .compression_method(CompressionMethod::Deflated)
                    .unix_permissions(*mode);
                z.start_file(*name, opts).expect("zip start_file");
                z.write_all(data).expect("zip write");
            }
            ZipItem::Dir(name, mode) => {
                let opts = SimpleFileOptions::default().unix_permissions(*mode);
                z.add_directory(*name, opts).expect("zip add_directory");
            }
            ZipItem::Symlink(name, target) => {
                let opts = SimpleFileOptions::default().unix_permissions(0o777);
                z.add_symlink(*name, *target, opts)
                    .expect("zip add_symlink");
            }
        }
    }
    z.finish().expect("zip finish");
}
