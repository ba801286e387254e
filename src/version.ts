// meshd's version, reported to control as Hostinfo.IPNVersion "meshd-<version>".

/** The meshd release version (kept equal to package.json by a unit test). */
export const MESHD_VERSION = '0.1.0';
