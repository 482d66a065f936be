// What build of lowbit is running: the project version and the git commit it was built from
// (meson's vcs_tag at build time: `git describe --always --dirty`, "unknown" outside a git
// checkout). Both go into every provenance record.
#pragma once

namespace lowbit {

const char* lowbit_version();
const char* lowbit_commit();

}  // namespace lowbit
