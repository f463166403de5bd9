// Figures as a person reads them: binary sizes, rates, durations, times
// relative to now, percentages that never round up to 100 too early.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

const known = (x) => x !== null && x !== undefined && isFinite(x);

/** 1536 -> "1.50 KiB": binary units, three significant digits. */
export function humanBytes(n) {
  if (!known(n)) return "–";
  let i = 0;
  let v = Math.max(0, n);
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i += 1;
  }
  const digits = i === 0 || v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${v.toFixed(digits)} ${UNITS[i]}`;
}

/** Bytes per second -> "12.3 MiB/s"; nothing moving is a dash, not "0 B/s". */
export function humanRate(bps) {
  if (!bps || bps < 1) return "–";
  return `${humanBytes(bps)}/s`;
}

/** Seconds -> "1 h 5 min", "3 min 20 s", "12 s". */
export function humanDuration(seconds) {
  if (!known(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} days`;
}

/** A unix time -> "just now", "4 min ago", "2 h ago", or a date. */
export function relativeTime(unix) {
  if (!unix) return "–";
  const ago = Date.now() / 1000 - unix;
  if (ago < 5) return "just now";
  if (ago < 60) return `${Math.floor(ago)} s ago`;
  if (ago < 3600) return `${Math.floor(ago / 60)} min ago`;
  if (ago < 86400) return `${Math.floor(ago / 3600)} h ago`;
  return new Date(unix * 1000).toLocaleDateString();
}

/** 97.25 -> "97 %", but 99.99 -> "99.9 %": never "100 %" until it is. */
export function percent(p) {
  if (!known(p)) return "–";
  if (p >= 100) return "100 %";
  if (p >= 99) return `${(Math.floor(p * 10) / 10).toFixed(1)} %`;
  return `${Math.floor(Math.max(0, p))} %`;
}

/** A readable id is long: show its start (the whole goes in a tooltip). */
export function shortId(id) {
  return id && id.length > 17 ? `${id.slice(0, 15)}…` : id || "";
}

/** (3, "file") -> "3 files"; (1, "file") -> "1 file". */
export function count(n, noun) {
  const k = n || 0;
  return `${k.toLocaleString()} ${noun}${k === 1 ? "" : "s"}`;
}
