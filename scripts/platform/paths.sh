# Where the platform builds find their inputs and keep their outputs (sourced).
# The vendor archives sit beside the project clone (CI has a read-only shared/ next to it).
platform_vendor_dir() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  echo "${MEMDIAG_VENDOR_DIR:-$(cd "$root/.." && pwd)/shared/vendor}"
}
platform_cache_dir() {
  echo "${MEMDIAG_PLATFORM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/memdiag/platforms}"
}
