// Queue depth by status over time, drawn with uPlot (vendored under static/vendor/uplot).
//
// The server samples Queue.stats() every few seconds and keeps the last hour, so the chart is
// full as soon as the page opens; new samples then arrive on the live stream ("queue.depth").
// Completed and cancelled only grow, and would flatten the lines that matter: they start hidden
// (click their legend entry to show them).

const SERIES = [
  { key: "due", label: "Queued, due", color: "#2563eb", show: true },
  { key: "running", label: "Running", color: "#d97706", show: true },
  { key: "scheduled", label: "Scheduled", color: "#7c3aed", show: true },
  { key: "failed", label: "Dead letters", color: "#dc2626", show: true },
  { key: "completed", label: "Completed", color: "#059669", show: false },
  { key: "cancelled", label: "Cancelled", color: "#6b7280", show: false },
];

export class DepthChart {
  constructor(container, maxPoints = 720) {
    this.container = container;
    this.maxPoints = maxPoints;
    this.data = [[], ...SERIES.map(() => [])];
    this.lastAt = 0;
    this.plot = null;
  }

  /** Draw once uPlot has loaded (it is a deferred classic script, the page a module). */
  mount() {
    if (this.plot || typeof uPlot === "undefined") return;
    const opts = {
      width: this.width(),
      height: 240,
      cursor: { drag: { x: false, y: false } },
      legend: { live: false }, // labels only; click one to hide or show its line
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(4, Math.ceil(max * 1.1))] } },
      axes: [
        { stroke: "#6b7280", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#e5e7eb" } },
        { stroke: "#6b7280", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#e5e7eb" }, size: 56 },
      ],
      series: [
        {},
        ...SERIES.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          show: s.show,
          points: { show: false },
          value: (u, v) => (v === null || v === undefined ? "-" : v.toLocaleString("en-US")),
        })),
      ],
    };
    this.plot = new uPlot(opts, this.data, this.container);
    // Follow the card's width (the layout is fluid).
    new ResizeObserver(() => this.plot.setSize({ width: this.width(), height: 240 })).observe(this.container);
  }

  width() {
    return Math.max(200, this.container.clientWidth || 800);
  }

  /** Replace everything with the server's history (samples oldest first). */
  reset(samples) {
    this.data = [[], ...SERIES.map(() => [])];
    this.lastAt = 0;
    this.append(samples);
  }

  /** Add samples (ignoring any already drawn) and redraw. */
  append(samples) {
    for (const s of samples) {
      if (s.at <= this.lastAt) continue;
      this.lastAt = s.at;
      this.data[0].push(s.at / 1000); // uPlot's time scale is in seconds
      const row = { ...s, due: s.queued - s.scheduled }; // apart from those waiting for their time
      SERIES.forEach((series, i) => this.data[i + 1].push(row[series.key]));
    }
    const extra = this.data[0].length - this.maxPoints;
    if (extra > 0) this.data = this.data.map((column) => column.slice(extra));
    if (this.plot) this.plot.setData(this.data);
    this.container.dataset.points = String(this.data[0].length); // for tests and curious readers
  }

  get points() {
    return this.data[0].length;
  }
}
