package httpapi

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// The overview's charts, drawn on the server as inline SVG: no script, no
// external asset, colours from the console's stylesheet. Every figure is
// also written as text (labels beside bars, a table under each line
// chart), so none is readable by colour alone.

// Chart geometry, in SVG user units (the SVG scales to its box).
const (
	chartW, chartH          = 560, 220
	padLeft, padRight       = 48, 12
	padTop, padBottom       = 12, 28
	barRowH, barLabelW      = 28, 200
	barValueW, barChartW    = 90, 560
	maxXLabels              = 12
	conversionPercentFormat = "%.0f%%"
)

// point is one datum of a line chart, at (X, Y) in the SVG.
type point struct {
	X, Y  float64
	Label string // the figure, as the tooltip says it
}

// series is one line of a line chart.
type series struct {
	Name  string
	Class string // the stylesheet's class: its colour and dash
	Path  string // the polyline's points
	Point []point
}

// axisLabel is a label on an axis, at Pos along it.
type axisLabel struct {
	Pos  float64
	Text string
}

// lineChart is a line chart of one or more series over the same buckets,
// with the figures as a table too.
type lineChart struct {
	ID, Title string
	W, H      int
	Series    []series
	XLabels   []axisLabel
	YLabels   []axisLabel
	EndX      float64
	// PadLeft is where the plot starts, AxisX where the Y labels end.
	PadLeft, AxisX float64
	// Rows are the table's: a bucket's label and each series' figure.
	Rows [][]string
}

// bar is one bar of a bar chart.
type bar struct {
	Label, Text     string
	Y, Width, TextX float64
	Class           string
}

// barChart is a horizontal bar chart with its figures beside the bars.
type barChart struct {
	ID, Title    string
	W, H         int
	LabelW, BarX float64
	Bars         []bar
	Empty        string // shown when there are no bars
}

// lineChartOf draws series of values over buckets starting at starts;
// format writes a value, max is the top of the scale (0: the largest
// value, at least 1).
func lineChartOf(id, title string, starts []time.Time, bucket time.Duration, names, classes []string, values [][]float64, format func(float64) string, top float64) lineChart {
	c := lineChart{ID: id, Title: title, W: chartW, H: chartH, EndX: chartW - padRight,
		PadLeft: padLeft, AxisX: padLeft - 4}
	for _, vs := range values {
		for _, v := range vs {
			top = math.Max(top, v)
		}
	}
	if top <= 0 {
		top = 1
	}
	n := len(starts)
	plotW := float64(chartW - padLeft - padRight)
	plotH := float64(chartH - padTop - padBottom)
	x := func(i int) float64 {
		if n == 1 {
			return padLeft + plotW/2
		}
		return padLeft + plotW*float64(i)/float64(n-1)
	}
	y := func(v float64) float64 { return padTop + plotH*(1-v/top) }
	label := func(t time.Time) string {
		if bucket < 24*time.Hour {
			return t.UTC().Format("15:04")
		}
		return t.UTC().Format("Jan 2")
	}
	for si, vs := range values {
		s := series{Name: names[si], Class: classes[si]}
		var path strings.Builder
		for i, v := range vs {
			p := point{X: round1(x(i)), Y: round1(y(v)), Label: fmt.Sprintf("%s %s: %s", label(starts[i]), names[si], format(v))}
			s.Point = append(s.Point, p)
			if i > 0 {
				path.WriteByte(' ')
			}
			path.WriteString(strconv.FormatFloat(p.X, 'f', -1, 64) + "," + strconv.FormatFloat(p.Y, 'f', -1, 64))
		}
		s.Path = path.String()
		c.Series = append(c.Series, s)
	}
	step := max(1, (n+maxXLabels-1)/maxXLabels)
	for i := 0; i < n; i += step {
		c.XLabels = append(c.XLabels, axisLabel{Pos: round1(x(i)), Text: label(starts[i])})
	}
	for _, f := range []float64{0, 0.5, 1} {
		c.YLabels = append(c.YLabels, axisLabel{Pos: round1(y(top * f)), Text: format(top * f)})
	}
	for i := range starts {
		row := []string{starts[i].UTC().Format("2006-01-02 15:04")}
		for _, vs := range values {
			row = append(row, format(vs[i]))
		}
		c.Rows = append(c.Rows, row)
	}
	return c
}

// barChartOf draws labelled values as bars, the longest the largest.
func barChartOf(id, title string, labels, texts []string, values []float64, classes []string, empty string) barChart {
	c := barChart{ID: id, Title: title, W: barChartW, LabelW: barLabelW - 8, BarX: barLabelW, Empty: empty}
	top := 0.0
	for _, v := range values {
		top = math.Max(top, v)
	}
	room := float64(barChartW - barLabelW - barValueW)
	for i, v := range values {
		w := 0.0
		if top > 0 {
			w = math.Max(round1(room*v/top), 0)
		}
		c.Bars = append(c.Bars, bar{Label: labels[i], Text: texts[i], Y: float64(i * barRowH), Width: w,
			TextX: barLabelW + w + 6, Class: classes[i]})
	}
	c.H = max(len(values), 1) * barRowH
	return c
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// overviewCharts are the overview's charts for the verifications in the
// range, their trends, their stats and the refusals in it.
type overviewCharts struct {
	Volume, Conversion                   lineChart
	Funnel, TimeToVerify, Steps, Refused barChart
}

func chartsOf(tr verify.Trends, st verify.Stats, refusals []verify.RefusalCount, bucket time.Duration) overviewCharts {
	var ch overviewCharts
	starts := make([]time.Time, len(tr.Buckets))
	created, sent, verified, conv := make([]float64, len(starts)), make([]float64, len(starts)), make([]float64, len(starts)), make([]float64, len(starts))
	for i, b := range tr.Buckets {
		starts[i] = b.Start
		created[i], sent[i], verified[i] = float64(b.Created), float64(b.Sent), float64(b.Verified)
		if b.Sent > 0 {
			conv[i] = 100 * float64(b.Verified) / float64(b.Sent)
		}
	}
	count := func(v float64) string { return strconv.Itoa(int(math.Round(v))) }
	percent := func(v float64) string { return fmt.Sprintf(conversionPercentFormat, v) }
	ch.Volume = lineChartOf("chart-volume", "Verifications started, sent and verified", starts, bucket,
		[]string{"started", "sent", "verified"}, []string{"s-created", "s-sent", "s-verified"},
		[][]float64{created, sent, verified}, count, 0)
	ch.Conversion = lineChartOf("chart-conversion", "Conversion (verified of sent)", starts, bucket,
		[]string{"conversion"}, []string{"s-conversion"}, [][]float64{conv}, percent, 100)

	// The funnel: per channel, what was sent, delivered, verified, failed.
	var labels, texts []string
	var values []float64
	var classes []string
	for _, name := range slices.Sorted(maps.Keys(st.Channels)) {
		c := st.Channels[name]
		for _, step := range []struct {
			what  string
			n     int
			class string
		}{{"sent", c.Deliveries - c.Failed, "b-sent"}, {"delivered", c.Delivered, "b-delivered"}, {"verified", c.Verified, "b-verified"}, {"failed", c.Failed, "b-failed"}} {
			labels = append(labels, name+" "+step.what)
			texts = append(texts, strconv.Itoa(step.n))
			values = append(values, float64(step.n))
			classes = append(classes, step.class)
		}
	}
	ch.Funnel = barChartOf("chart-funnel", "By channel: sent, delivered, verified, failed", labels, texts, values, classes, "Nothing sent in this range.")

	p50, p95 := tr.TimeToVerify50, tr.TimeToVerify95
	ch.TimeToVerify = barChartOf("chart-ttv", "Time to verify", []string{"half verified within", "95 % verified within"},
		[]string{durationText(p50), durationText(p95)}, []float64{p50.Seconds(), p95.Seconds()}, []string{"b-verified", "b-sent"}, "")
	verifiedAny := slices.ContainsFunc(tr.Buckets, func(b verify.TrendBucket) bool { return b.Verified > 0 })
	if !verifiedAny {
		ch.TimeToVerify.Bars, ch.TimeToVerify.Empty = nil, "Nothing verified in this range."
	}

	labels, texts, values, classes = nil, nil, nil, nil
	for i, n := range tr.Steps {
		label, text := fmt.Sprintf("step %d", i+1), strconv.Itoa(n)
		if i > 0 && tr.Steps[0] > 0 {
			text = fmt.Sprintf("%d (%.0f%%)", n, 100*float64(n)/float64(tr.Steps[0]))
		}
		labels, texts, values, classes = append(labels, label), append(texts, text), append(values, float64(n)), append(classes, "b-sent")
	}
	if tr.Resends > 0 {
		labels, texts, values, classes = append(labels, "resent"), append(texts, strconv.Itoa(tr.Resends)), append(values, float64(tr.Resends)), append(classes, "b-delivered")
	}
	ch.Steps = barChartOf("chart-steps", "Fallback: verifications per step", labels, texts, values, classes, "Nothing sent in this range.")

	// Most refused first, at most six.
	top := byReason(refusals)
	top = top[:min(len(top), 6)]
	labels, texts, values, classes = nil, nil, nil, nil
	for _, r := range top {
		labels, texts, values, classes = append(labels, r.Reason), append(texts, strconv.Itoa(r.Count)), append(values, float64(r.Count)), append(classes, "b-failed")
	}
	ch.Refused = barChartOf("chart-refused", "Refused requests, by reason", labels, texts, values, classes, "Nothing refused in this range.")
	return ch
}

// durationText writes a time to verify: "12.3 s", "4 min 5 s".
func durationText(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	d = d.Round(time.Second)
	return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
}
