// A tiny time-series plot on a <canvas> (no dependencies). Values are numbers; times in seconds.
export class SeriesPlot {
  constructor(canvas, { maxPoints = 600 } = {}) {
    this.canvas = canvas;
    this.points = [];
    this.maxPoints = maxPoints;
  }

  push(t, v) {
    this.points.push([t, v]);
    if (this.points.length > this.maxPoints) this.points.shift();
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const w = (c.width = c.clientWidth * (globalThis.devicePixelRatio || 1) || 200);
    const h = (c.height = c.clientHeight * (globalThis.devicePixelRatio || 1) || 60);
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    if (this.points.length === 0) return;
    const ts = this.points.map((p) => p[0]);
    const vs = this.points.map((p) => p[1]);
    const t0 = Math.min(...ts), t1 = Math.max(...ts);
    let lo = Math.min(...vs), hi = Math.max(...vs);
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    const x = (t) => (t1 > t0 ? ((t - t0) / (t1 - t0)) * (w - 8) + 4 : w / 2);
    const y = (v) => h - 4 - ((v - lo) / (hi - lo)) * (h - 8);
    g.strokeStyle = "#e3e7ec";
    g.beginPath(); g.moveTo(0, h - 1); g.lineTo(w, h - 1); g.stroke();
    g.strokeStyle = "#2d6cdf";
    g.lineWidth = 2;
    g.beginPath();
    this.points.forEach(([t, v], i) => (i ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
    g.stroke();
    if (this.points.length === 1) { g.fillStyle = "#2d6cdf"; g.fillRect(x(ts[0]) - 2, y(vs[0]) - 2, 4, 4); }
  }
}
