// Command swarmplot draws docs/swarm-scale.svg from the JSON lines of
// `doppler bench swarm --json` runs (docs/swarm-scale.jsonl): completion
// time against the number of peers (p2p, HTTP from the seed, one HTTP
// download alone) and the seed's upload against the number of peers.
// Runs are grouped into series by mode, model size and link rate. An -out
// ending in .png writes a PNG instead.
//
//	go run ./swarm/swarmbench/cmd/swarmplot -in docs/swarm-scale.jsonl -out docs/swarm-scale.svg
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"io"
	"log"
	"os"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/doppler-llm/doppler/swarm/swarmbench"
)

func main() {
	in := flag.String("in", "docs/swarm-scale.jsonl", "JSON lines of bench swarm --json runs")
	out := flag.String("out", "docs/swarm-scale.svg", "the SVG to write")
	flag.Parse()
	runs, err := read(*in)
	if err != nil {
		log.Fatal(err)
	}
	if err := draw2(runs, *out); err != nil {
		log.Fatal(err)
	}
}

// read parses one Result per non-empty line.
func read(path string) ([]swarmbench.Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var runs []swarmbench.Result
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var r swarmbench.Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		runs = append(runs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(runs) == 0 {
		return nil, fmt.Errorf("%s: no runs", path)
	}
	return runs, nil
}

// series are the runs of one configuration, by peers.
type series struct {
	label string
	runs  []swarmbench.Result
}

func group(runs []swarmbench.Result) []series {
	var out []series
	for _, r := range runs {
		label := fmt.Sprintf("%s, %s model, %s", r.Mode, mib(r.ModelBytes), swarmbench.FormatRate(r.Rate))
		if r.Rate == 0 {
			label = fmt.Sprintf("%s, %s model", r.Mode, mib(r.ModelBytes))
		}
		i := slices.IndexFunc(out, func(s series) bool { return s.label == label })
		if i < 0 {
			out = append(out, series{label: label})
			i = len(out) - 1
		}
		out[i].runs = append(out[i].runs, r)
	}
	for _, s := range out {
		slices.SortFunc(s.runs, func(a, b swarmbench.Result) int { return a.Peers - b.Peers })
	}
	return out
}

func mib(n int64) string { return fmt.Sprintf("%g MiB", float64(n)/(1<<20)) }

// xy picks one figure of each run against its peers.
func xy(runs []swarmbench.Result, f func(swarmbench.Result) float64) plotter.XYs {
	var pts plotter.XYs
	for _, r := range runs {
		if v := f(r); v > 0 {
			pts = append(pts, plotter.XY{X: float64(r.Peers), Y: v})
		}
	}
	return pts
}

var colors = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
}

// line adds a line with points to p, styled by series i and dash d.
func line(p *plot.Plot, name string, pts plotter.XYs, i int, dash bool, shape draw.GlyphDrawer) error {
	if len(pts) == 0 {
		return nil
	}
	l, s, err := plotter.NewLinePoints(pts)
	if err != nil {
		return err
	}
	c := colors[i%len(colors)]
	l.Color, s.Color, s.Shape = c, c, shape
	l.Width = vg.Points(1.5)
	if dash {
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	}
	p.Add(l, s)
	p.Legend.Add(name, l, s)
	return nil
}

func logX(p *plot.Plot) {
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Label.Text = "peers (N)"
	p.Legend.Top, p.Legend.Left = true, true
}

// draw2 writes the two panels side by side.
func draw2(runs []swarmbench.Result, out string) error {
	groups := group(runs)
	times, seed := plot.New(), plot.New()
	times.Title.Text = "time until every peer holds the model"
	times.Y.Label.Text = "seconds"
	times.Y.Scale, times.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	seed.Title.Text = "seed upload / model size"
	seed.Y.Label.Text = "× the model"
	seed.Y.Scale, seed.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	logX(times)
	logX(seed)
	for i, g := range groups {
		suffix := ""
		if len(groups) > 1 {
			suffix = " (" + g.label + ")"
		}
		for k, l := range []struct {
			name  string
			f     func(swarmbench.Result) float64
			dash  bool
			shape draw.GlyphDrawer
		}{
			{"p2p", func(r swarmbench.Result) float64 { return r.P2PSeconds }, false, draw.CircleGlyph{}},
			{"HTTP, every peer from the seed", func(r swarmbench.Result) float64 { return r.HTTPSeconds }, true, draw.SquareGlyph{}},
			{"one HTTP download alone", func(r swarmbench.Result) float64 { return r.OneHTTPSeconds }, true, draw.TriangleGlyph{}},
		} {
			if err := line(times, l.name+suffix, xy(g.runs, l.f), i*3+k, l.dash, l.shape); err != nil {
				return err
			}
		}
		if err := line(seed, "p2p"+suffix, xy(g.runs, func(r swarmbench.Result) float64 { return r.SeedUploadRatio }), i*3, false, draw.CircleGlyph{}); err != nil {
			return err
		}
		if err := line(seed, "HTTP"+suffix, xy(g.runs, func(r swarmbench.Result) float64 { return float64(r.HonestPeers) }), i*3+1, true, draw.SquareGlyph{}); err != nil {
			return err
		}
	}
	if len(groups) == 1 {
		times.Title.Text += " (" + groups[0].label + ")"
	}
	const w, h = 12 * vg.Inch, 4.5 * vg.Inch
	var c interface {
		vg.CanvasSizer
		io.WriterTo
	}
	if strings.HasSuffix(out, ".png") {
		c = vgimg.PngCanvas{Canvas: vgimg.New(w, h)}
	} else {
		c = vgsvg.New(w, h)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Millimeter * 6, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2,
		PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4}
	cs := plot.Align([][]*plot.Plot{{times, seed}}, tiles, dc)
	times.Draw(cs[0][0])
	seed.Draw(cs[0][1])
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
