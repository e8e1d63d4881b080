//! Size and shape budgets (L016 to L019): limits Lambda documents or users have hit beyond the
//! 10 GiB of L004. All warnings: the documentation gives them as advice or they are reported
//! causes, not refusals lamina can reproduce.

use super::fs::{FileSystem, Notes};
use super::rules::{Finding, Rule};

/// The manifest size AWS asks Lambda images to stay under: 25,400 bytes (the Lambda Developer
/// Guide's container-image guidance as the tracker issue quotes it; notes that cite it give
/// "Image manifest (recommended) <25,400 bytes"). Advice, hence a warning.
pub const MAX_MANIFEST_BYTES: usize = 25_400;

/// Layers an overlay mount stacks (Docker's and containerd's limit of 127; Lambda documents
/// none, so this is a warning).
pub const MAX_LAYERS: usize = 127;

/// L016 and L017: the manifest's size and the number of layers.
pub fn manifest(manifest_bytes: usize, layers: usize) -> Vec<Finding> {
    let mut v = Vec::new();
    if manifest_bytes > MAX_MANIFEST_BYTES {
        v.push(Finding::new(
            Rule::L016,
            format!(
                "the manifest is {manifest_bytes} bytes, over the {MAX_MANIFEST_BYTES} bytes AWS asks Lambda images to stay under: fewer layers (or fewer annotations) make it smaller"
            ),
        ));
    }
    if layers > MAX_LAYERS {
        v.push(Finding::new(
            Rule::L017,
            format!(
                "the image has {layers} layers, more than the {MAX_LAYERS} an overlay file system stacks: squash some (fewer [[layer]]s, or a flatter base)"
            ),
        ));
    }
    v
}

fn listed(paths: &[String], count: usize) -> String {
    let shown: Vec<String> = paths.iter().map(|p| format!("/{p}")).collect();
    let more = count.saturating_sub(paths.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// L018 and L019: hard links, and entries without their parent directory.
pub fn shapes(fs: &FileSystem) -> Vec<Finding> {
    let Notes {
        hard_links,
        hard_link_count,
        orphans,
        orphan_count,
    } = &fs.notes;
    let mut v = Vec::new();
    if *hard_link_count > 0 {
        v.push(Finding::at(
            Rule::L018,
            &format!("/{}", hard_links[0]),
            format!(
                "{hard_link_count} hard link entries to files of a lower layer ({}): Lambda has refused such layers with `UnsupportedImageLayerDetected`; store copies instead",
                listed(hard_links, *hard_link_count)
            ),
        ));
    }
    if *orphan_count > 0 {
        v.push(Finding::at(
            Rule::L019,
            &format!("/{}", orphans[0]),
            format!(
                "{orphan_count} entries whose parent directory no layer holds ({}): Lambda has refused such images with `InvalidImage: MissingParentDirectory`; add the directories to the layer",
                listed(orphans, *orphan_count)
            ),
        ));
    }
    v
}
