#!/usr/bin/env node
// Prints, one per line, the nginx patches OpenResty's util/mirror-tarballs applies for a
// given nginx version, in its order, as "<strip level> <file under patches/>".
// It evaluates the script's version conditions (util/ver-ge, `if [ "$main_ver" = x ]`,
// if/elif/else/fi) instead of keeping a copied list, so a newer patches archive needs no
// change here. The server_header patch is marked: the release fills in its ".unknown".
//
//   node openresty-patches.js <openresty source root> <nginx version>
"use strict";
const fs = require("fs");
const path = require("path");

function verGe(a, b) {
  const x = a.split(".").map(Number);
  const y = b.split(".").map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] || 0) - (y[i] || 0);
    if (d !== 0) return d > 0;
  }
  return true;
}

function patchList(root, ver) {
  const lines = fs.readFileSync(path.join(root, "util/mirror-tarballs"), "utf8").split("\n");
  const start = lines.findIndex((l) => /^cd nginx-\$ver\b/.test(l.trim()));
  const end = lines.findIndex((l, i) => i > start && /^cd \.\./.test(l.trim()));
  if (start < 0 || end < 0) throw new Error("mirror-tarballs: nginx patch section not found");
  let answer = null;
  const stack = []; // { parent, taken, active }
  const active = () => stack.every((s) => s.active);
  const cond = (text) => {
    let m = text.match(/\[ "\$answer" = "([YN])" \]/);
    if (m) return (answer === "Y") === (m[1] === "Y");
    m = text.match(/\[ "\$main_ver" = "([\d.]+)" \]/);
    if (m) return ver === m[1];
    m = text.match(/\[ `\$root\/util\/ver-ge "\$main_ver" ([\d.]+)` = "([YN])" \]/);
    if (m) return verGe(ver, m[1]) === (m[2] === "Y");
    throw new Error(`mirror-tarballs: condition not understood: ${text}`);
  };
  const out = [];
  for (let i = start + 1; i < end; i++) {
    const l = lines[i].trim();
    if (l === "" || l.startsWith("#")) continue;
    let m;
    if ((m = l.match(/^answer=`\$root\/util\/ver-ge "\$main_ver" ([\d.]+)`$/))) {
      if (active()) answer = verGe(ver, m[1]) ? "Y" : "N";
    } else if (/^if /.test(l)) {
      const c = active() ? cond(l) : false;
      stack.push({ taken: c, active: c });
    } else if (/^elif /.test(l)) {
      const top = stack[stack.length - 1];
      const outer = stack.slice(0, -1).every((s) => s.active);
      top.active = !top.taken && outer && cond(l);
      top.taken = top.taken || top.active;
    } else if (l === "else") {
      const top = stack[stack.length - 1];
      top.active = !top.taken;
      top.taken = true;
    } else if (l === "fi") {
      stack.pop();
    } else if ((m = l.match(/^patch (-p\d)(?: -l)? < (\S+)/))) {
      if (!active()) continue;
      let file = m[2].replace("$root/patches/", "").replace(/\$main_ver|\$ver/g, ver);
      if (file === "server_header.patch") file = `nginx-${ver}-server_header.patch server_header`;
      out.push(`${m[1].slice(2)} ${file}`);
    }
  }
  return out;
}

if (require.main === module) {
  const [root, ver] = process.argv.slice(2);
  if (!root || !ver) {
    console.error("usage: openresty-patches.js <openresty source root> <nginx version>");
    process.exit(2);
  }
  process.stdout.write(patchList(root, ver).join("\n") + "\n");
}
module.exports = { patchList };
