package loadgen

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Plot colours: one per latency series, the same in both panels.
var (
	colorP50 = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colorP99 = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	colorMax = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
)

// WritePlot draws the report's latency as an image at path: on top, p50, p99
// and max over the run; below, the percentile curve. The format follows the
// file extension (png, jpg, svg, pdf, eps, tif; png if there is none).
func (r *Report) WritePlot(path string) error {
	if r.Requests == 0 || len(r.Percentiles) == 0 {
		return errors.New("plot: the report has no latency samples")
	}
	format := strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), ".")
	if format == "" {
		format = "png"
	}
	overTime, err := timelinePlot(r)
	if err != nil {
		return err
	}
	curve, err := percentilePlot(r)
	if err != nil {
		return err
	}
	c, err := draw.NewFormattedCanvas(10*vg.Inch, 9*vg.Inch, format)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Millimeter, PadY: 6 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	plots := [][]*plot.Plot{{overTime}, {curve}}
	canvases := plot.Align(plots, tiles, draw.New(c))
	overTime.Draw(canvases[0][0])
	curve.Draw(canvases[1][0])

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plot: close %s: %w", path, err)
	}
	return nil
}

// ms converts a latency to the plots' unit.
func ms(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}

// newPlot starts a latency panel: a title naming the run and what the panel
// shows, the axis labels, a grid, and latency from 0 so that panels of
// different runs compare by eye.
func newPlot(r *Report, what, xLabel string) *plot.Plot {
	mode := "closed loop"
	if r.Mode == ModeOpen {
		mode = fmt.Sprintf("open loop %d req/s", r.Rate)
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("flashgrab load — %s, %s, %d workers — %s", r.Scenario, mode, r.Concurrency, what)
	p.X.Label.Text = xLabel
	p.Y.Label.Text = "latency (ms)"
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	return p
}

// timelinePlot draws p50, p99 and max per interval.
func timelinePlot(r *Report) (*plot.Plot, error) {
	p := newPlot(r, "latency over time", "time since start (s)")
	series := []struct {
		name string
		col  color.Color
		get  func(Interval) time.Duration
	}{
		{"max", colorMax, func(iv Interval) time.Duration { return iv.Max }},
		{"p99", colorP99, func(iv Interval) time.Duration { return iv.P99 }},
		{"p50", colorP50, func(iv Interval) time.Duration { return iv.P50 }},
	}
	for _, s := range series {
		var xys plotter.XYs
		for _, iv := range r.Timeline {
			if iv.Requests == 0 {
				continue
			}
			xys = append(xys, plotter.XY{X: iv.Start.Seconds(), Y: ms(s.get(iv))})
		}
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, fmt.Errorf("plot: %s over time: %w", s.name, err)
		}
		l.Color = s.col
		l.Width = vg.Points(1.2)
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	p.Legend.Top = true
	return p, nil
}

// percentileTicks label the percentile axis, which plots 1/(1-q) on a log
// scale so that each extra nine gets the same width.
var percentileTicks = plot.ConstantTicks{
	{Value: 1, Label: "0%"}, {Value: 2, Label: "50%"}, {Value: 10, Label: "90%"},
	{Value: 100, Label: "99%"}, {Value: 1000, Label: "99.9%"}, {Value: 10_000, Label: "99.99%"},
	{Value: 100_000, Label: "99.999%"}, {Value: 1_000_000, Label: "99.9999%"},
}

// percentilePlot draws the latency percentile curve, marking p50, p99 and the max.
func percentilePlot(r *Report) (*plot.Plot, error) {
	p := newPlot(r, "latency by percentile", "percentile")
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = percentileTicks
	var xys plotter.XYs
	for _, pt := range r.Percentiles {
		if pt.Percentile >= 100 {
			continue // 1/(1-q) is infinite; the max is drawn as a line instead
		}
		xys = append(xys, plotter.XY{X: 1 / (1 - pt.Percentile/100), Y: ms(pt.Latency)})
	}
	if len(xys) == 0 {
		xys = plotter.XYs{{X: 1, Y: ms(r.Latency.Max)}}
	}
	l, err := plotter.NewLine(xys)
	if err != nil {
		return nil, fmt.Errorf("plot: percentile curve: %w", err)
	}
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add("latency", l)
	xmax := math.Max(xys[len(xys)-1].X, 1000)
	for _, m := range []struct {
		name string
		col  color.Color
		v    time.Duration
	}{{"p50", colorP50, r.Latency.P50}, {"p99", colorP99, r.Latency.P99}, {"max", colorMax, r.Latency.Max}} {
		h, err := plotter.NewLine(plotter.XYs{{X: 1, Y: ms(m.v)}, {X: xmax, Y: ms(m.v)}})
		if err != nil {
			return nil, fmt.Errorf("plot: %s line: %w", m.name, err)
		}
		h.Color = m.col
		h.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(h)
		p.Legend.Add(fmt.Sprintf("%s %s", m.name, fmtLatency(m.v)), h)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	return p, nil
}
