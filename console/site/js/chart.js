// A sensor's buckets as a uPlot chart: the mean of each bucket as a line with points, its min–max as
// a band, events as dashed vertical lines; dragging across it picks a narrower range.

import { tick, when } from "./format.js";

// uPlot (npm `uplot`, pinned by console/package-lock.json), loaded only when a chart is drawn.
const library = () => import("/console/vendor/uPlot.js").then((module) => module.default);

const INK = "#1f2933";
const LINE = "#0b3d91";
const BAND = "rgba(11, 61, 145, 0.14)";
const EVENT = "#b3261e";
const HEIGHT = 320;

/**
 * Draws into `container` and returns the chart (`destroy()` removes it). `buckets` as the API gives
 * them; `unit` labels the values; `eventTimes` in ms; `range` {from, to} in ms; `onSelect(from, to)`
 * after a drag.
 */
export async function drawChart(container, { buckets, unit, eventTimes, range, onSelect, signal }) {
  const uPlot = await library();
  // uPlot's times are seconds; a bucket without readings is a gap.
  const xs = buckets.map((b) => Date.parse(b.startTime) / 1000);
  const pick = (field) => buckets.map((b) => (Number(b.count) > 0 ? b[field] : null));
  const markers = eventTimes.map((t) => t / 1000);
  const options = {
    width: container.clientWidth || 800,
    height: HEIGHT,
    scales: { x: { time: true, range: () => [range.from / 1000, range.to / 1000] } },
    series: [
      { value: (chart, seconds) => (seconds === null ? "–" : when(seconds * 1000)) },
      { label: "min", stroke: BAND, width: 1, points: { show: false } },
      { label: "mean", stroke: LINE, width: 2, points: { show: true, size: 5, fill: LINE } },
      { label: "max", stroke: BAND, width: 1, points: { show: false } },
    ],
    bands: [{ series: [3, 1], fill: BAND }],
    axes: [
      {
        stroke: INK, grid: { stroke: "#e4e7eb" }, ticks: { stroke: "#cbd2d9" }, size: 50,
        // The times of day in 24 hours, and the date where it changes, as the rest of the console.
        values: (chart, splits, axis, space, step) =>
          splits.map((s, i) => tick(s * 1000, step * 1000, i ? splits[i - 1] * 1000 : undefined)),
      },
      { stroke: INK, grid: { stroke: "#e4e7eb" }, ticks: { stroke: "#cbd2d9" }, size: 60, label: unit || null },
    ],
    legend: { live: true },
    cursor: { drag: { x: true, y: false, setScale: false } },
    hooks: {
      draw: [(chart) => drawMarkers(chart, markers, uPlot.pxRatio)],
      setSelect: [
        (chart) => {
          const { left, width } = chart.select;
          if (width < 3) return;
          const from = chart.posToVal(left, "x") * 1000;
          const to = chart.posToVal(left + width, "x") * 1000;
          chart.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
          onSelect(from, to);
        },
      ],
    },
  };
  const chart = new uPlot(options, [xs, pick("min"), pick("mean"), pick("max")], container);
  // What was plotted, from the chart's own data: the points of the mean line.
  container.dataset.points = String(chart.data[2].filter((v) => v !== null).length);
  // Follows the page's width; a fixed height.
  window.addEventListener("resize", () => chart.setSize({ width: container.clientWidth, height: HEIGHT }), { signal });
  return chart;
}

function drawMarkers(chart, times, ratio) {
  const { ctx, bbox } = chart;
  ctx.save();
  ctx.strokeStyle = EVENT;
  ctx.lineWidth = 2 * ratio;
  ctx.setLineDash([5 * ratio, 4 * ratio]);
  for (const t of times) {
    const x = Math.round(chart.valToPos(t, "x", true));
    if (x < bbox.left || x > bbox.left + bbox.width) continue;
    ctx.beginPath();
    ctx.moveTo(x, bbox.top);
    ctx.lineTo(x, bbox.top + bbox.height);
    ctx.stroke();
  }
  ctx.restore();
}
