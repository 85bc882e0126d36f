package bench

import (
	"cmp"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

const (
	plotWidth  = 11 * vg.Inch
	plotHeight = 4.5 * vg.Inch
	plotPad    = 4 * vg.Millimeter
	// logSpan is the ratio between the largest and smallest positive
	// latency above which the latency panel switches to a log axis: two
	// decades, the point where a linear axis flattens p50 against the floor.
	logSpan = 100
)

// Plot writes the ladder as one SVG file at path, which must end in .svg:
// on the left accepted/s and final/s against offered/s with the y = x
// diagonal, on the right edge and accept→final latency percentiles against
// offered/s, titled with the broker and profile. Both panels share the x
// range so the same offered rate lines up. A report with no steps, one step
// or all-zero figures still yields a valid plot; on a log latency axis,
// zero (and non-finite) values are left out and the panel title says so.
func (r *Report) Plot(path string) error {
	if ext := filepath.Ext(path); !strings.EqualFold(ext, ".svg") {
		return fmt.Errorf("bench: plot %s: want a .svg file, got extension %q", path, ext)
	}
	rates, err := r.ratesPanel()
	if err != nil {
		return fmt.Errorf("bench: plot rates: %w", err)
	}
	latency, err := r.latencyPanel()
	if err != nil {
		return fmt.Errorf("bench: plot latency: %w", err)
	}

	c := vgsvg.New(plotWidth, plotHeight)
	dc := draw.New(c)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())

	title := r.plotTitle()
	style := plot.New().Title.TextStyle // centred, hanging from its y
	style.Font.Size = vg.Points(14)
	dc.FillText(style, vg.Point{X: dc.Center().X, Y: dc.Max.Y - plotPad}, title)

	tiles := draw.Tiles{
		Rows:      1,
		Cols:      2,
		PadTop:    style.Rectangle(title).Size().Y + 2*plotPad,
		PadBottom: plotPad,
		PadLeft:   plotPad,
		PadRight:  plotPad,
		PadX:      3 * plotPad,
	}
	panels := [][]*plot.Plot{{rates, latency}}
	canvases := plot.Align(panels, tiles, dc)
	rates.Draw(canvases[0][0])
	latency.Draw(canvases[0][1])

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: plot: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: plot: close %s: %w", path, err)
	}
	return nil
}

func (r *Report) plotTitle() string {
	broker := r.Machine.Broker
	if broker == "" {
		broker = "unknown broker"
	}
	profile := r.Profile
	if profile == "" {
		profile = "unnamed"
	}
	return fmt.Sprintf("orderpipe ladder: %s, %s profile", broker, profile)
}

// ratesPanel is accepted/s and final/s against offered/s. The y = x
// diagonal is what a pipeline that keeps up would draw.
func (r *Report) ratesPanel() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "rates vs offered"
	p.X.Label.Text = "offered (orders/s)"
	p.Y.Label.Text = "orders/s"
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.TextStyle.Font.Size = vg.Points(10)

	xMax := r.maxOffered()
	diagonal, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: xMax, Y: xMax}})
	if err != nil {
		return nil, err
	}
	diagonal.Color = color.Gray{Y: 0x99}
	diagonal.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(diagonal)
	p.Legend.Add("y = x", diagonal)

	var args []any
	if xys, _ := r.stepPoints(func(s Step) float64 { return s.AcceptedRPS }, false); len(xys) > 0 {
		args = append(args, "accepted/s", xys)
	}
	if xys, _ := r.stepPoints(func(s Step) float64 { return s.FinalRPS }, false); len(xys) > 0 {
		args = append(args, "final/s", xys)
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return nil, err
	}
	p.X.Min, p.X.Max = 0, xMax
	linearFromZero(&p.Y)
	return p, nil
}

// latencyPanel is the latency percentiles against offered/s, on a log axis
// when they span more than logSpan.
func (r *Report) latencyPanel() (*plot.Plot, error) {
	series := []struct {
		name string
		y    func(Step) float64
	}{
		{"edge p50", func(s Step) float64 { return s.EdgeP50ms }},
		{"edge p99", func(s Step) float64 { return s.EdgeP99ms }},
		{"edge p99.9", func(s Step) float64 { return s.EdgeP999ms }},
		{"accept→final p50", func(s Step) float64 { return s.FinalP50ms }},
		{"accept→final p99", func(s Step) float64 { return s.FinalP99ms }},
	}
	// Only values that will be drawn count, or a log axis could be left
	// with no positive range.
	lo, hi := math.Inf(1), 0.0
	for _, s := range r.Steps {
		if !isFinite(s.OfferedRPS) {
			continue
		}
		for _, ser := range series {
			if v := ser.y(s); v > 0 && isFinite(v) {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	logY := hi > 0 && hi/lo > logSpan

	p := plot.New()
	p.Title.Text = "latency vs offered"
	p.X.Label.Text = "offered (orders/s)"
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.TextStyle.Font.Size = vg.Points(10)

	var args []any
	omitted := 0
	for _, ser := range series {
		xys, dropped := r.stepPoints(ser.y, logY)
		omitted += dropped
		if len(xys) > 0 {
			args = append(args, ser.name, xys)
		}
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return nil, err
	}

	p.X.Min, p.X.Max = 0, r.maxOffered()
	p.Y.Label.Text = "latency (ms)"
	if logY {
		// Said in the title: a long vertical label pushes the panel down.
		p.Title.Text = "latency vs offered (log y)"
		if omitted > 0 {
			p.Title.Text = "latency vs offered (log y, zeros omitted)"
		}
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	} else {
		linearFromZero(&p.Y)
	}
	return p, nil
}

// stepPoints is (offered, y) for every step, ordered by offered rate so a
// line never doubles back when the ladder was not run in rising order. It
// leaves out points a plotter would reject (NaN, ±Inf) and, when positive
// is set, points a log axis cannot show; dropped counts those left out.
func (r *Report) stepPoints(y func(Step) float64, positive bool) (xys plotter.XYs, dropped int) {
	for _, s := range r.Steps {
		x, v := s.OfferedRPS, y(s)
		if !isFinite(x) || !isFinite(v) || (positive && v <= 0) {
			dropped++
			continue
		}
		xys = append(xys, plotter.XY{X: x, Y: v})
	}
	slices.SortStableFunc(xys, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
	return xys, dropped
}

// maxOffered is the x range's upper end: the highest offered rate, or 1
// when there is none, so that the axis never collapses to a point.
func (r *Report) maxOffered() float64 {
	m := 0.0
	for _, s := range r.Steps {
		if isFinite(s.OfferedRPS) {
			m = max(m, s.OfferedRPS)
		}
	}
	if m <= 0 {
		return 1
	}
	return m
}

// linearFromZero starts a linear axis at 0 and keeps it open when there is
// no data or only zeros; otherwise plot would centre it on the value ±1.
func linearFromZero(a *plot.Axis) {
	a.Min = 0
	if !(a.Max > 0) || math.IsInf(a.Max, 0) {
		a.Max = 1
	}
}

func isFinite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
