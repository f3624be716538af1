//! The latency-versus-throughput chart of a run, as SVG and as PNG: for each
//! protocol, p99 (solid) and p50 (dashed) latency against the throughput of
//! each load point, every point labelled with its load, one colour a
//! protocol.
//!
//! Text is measured and drawn with Noto Sans compiled into the binary
//! (plotters' `ab_glyph` font backend for layout, [`Typeset`] for the PNG's
//! pixels), so drawing needs no font library or font file on the machine.
//! The SVG names the font family and leaves drawing text to its viewer. The
//! PNG is rendered into memory and encoded with `png`.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use plotters::backend::BitMapBackend;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
// BackendStyle is named by path: imported, its `stroke_width` would clash
// with that of plotters' Color.
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

use super::report::{PointResult, RunInfo};

/// Width and height of both images, in pixels.
pub const SIZE: (u32, u32) = (960, 600);

const FONT: &str = "sans-serif";

/// Line colours, one a protocol, dark enough to read on white.
const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

pub fn title(info: &RunInfo) -> String {
    let version = info.model_version.as_ref().map(|v| format!(" v{v}")).unwrap_or_default();
    let rows = match info.rows_per_request {
        1 => "1 row".to_string(),
        n => format!("{n} rows"),
    };
    format!("{}{version}: latency against throughput ({rows} a request)", info.model)
}

pub fn svg(title: &str, points: &[PointResult]) -> Result<String, String> {
    register_font();
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        draw(&root, title, points)?;
        root.present().map_err(|e| format!("cannot draw the chart: {e}"))?;
    }
    Ok(text)
}

pub fn png(title: &str, points: &[PointResult]) -> Result<Vec<u8>, String> {
    register_font();
    let (width, height) = SIZE;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = Typeset(BitMapBackend::with_buffer(&mut rgb, SIZE)).into_drawing_area();
        draw(&root, title, points)?;
        root.present().map_err(|e| format!("cannot draw the chart: {e}"))?;
    }
    let mut encoded = Vec::new();
    let mut encoder = png::Encoder::new(&mut encoded, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&rgb))
        .map_err(|e| format!("cannot encode the chart as PNG: {e}"))?;
    Ok(encoded)
}

fn register_font() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // The font is a constant that parses; were it not, the drawing would
        // fail with a font error, reported as the chart's.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, ttf_noto_sans::REGULAR);
    });
}

fn font() -> &'static FontRef<'static> {
    static FONT: std::sync::OnceLock<FontRef<'static>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(ttf_noto_sans::REGULAR).expect("Noto Sans parses"))
}

/// The bitmap backend with text drawn here. plotters' `ab_glyph` backend
/// puts each glyph's outline at the pen position, without the glyph's left
/// side bearing, so that letters run together ("cl" reads as "d"); this one
/// places glyphs as the font says. Everything else is the bitmap backend's.
struct Typeset<'a>(BitMapBackend<'a>);

impl DrawingBackend for Typeset<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_pixel(point, color)
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_line(from, to, style)
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_path(path, style)
    }

    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        let font = font().as_scaled(PxScale::from(style.size() as f32));

        // Lay the glyphs out along a baseline at y = 0, pen from x = 0.
        let mut glyphs = Vec::with_capacity(text.len());
        let mut pen = 0.0f32;
        let mut previous = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(previous) = previous {
                pen += font.kern(previous, id);
            }
            glyphs.push(id.with_scale_and_position(font.scale(), ab_glyph::point(pen, 0.0)));
            pen += font.h_advance(id);
            previous = Some(id);
        }

        // Place that line against the anchor, then turn it as the style says.
        let dx = match style.anchor().h_pos {
            HPos::Left => 0.0,
            HPos::Center => -pen / 2.0,
            HPos::Right => -pen,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => font.ascent(),
            VPos::Center => (font.ascent() + font.descent()) / 2.0,
            VPos::Bottom => font.descent(),
        };
        let turn = style.transform();
        let mut result = Ok(());
        for glyph in glyphs {
            let Some(outline) = font.outline_glyph(glyph) else { continue };
            let bounds = outline.px_bounds();
            outline.draw(|x, y, coverage| {
                let (gx, gy) = (bounds.min.x + x as f32 + dx, bounds.min.y + y as f32 + dy);
                let (tx, ty) = turn.transform(gx.round() as i32, gy.round() as i32);
                let alpha = color.alpha * f64::from(coverage);
                if result.is_ok() && alpha > 0.0 {
                    result = self
                        .0
                        .draw_pixel((pos.0 + tx, pos.1 + ty), BackendColor { alpha, ..color });
                }
            });
        }
        result
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    points: &[PointResult],
) -> Result<(), String> {
    let fail = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("cannot draw the chart: {e}");
    root.fill(&WHITE).map_err(fail)?;

    // Axes: throughput from 0; latency on a log scale around every p50 and
    // p99, since a sweep's latencies span orders of magnitude.
    let measured: Vec<&PointResult> = points.iter().filter(|p| p.latency_ms.is_some()).collect();
    let x_max = measured.iter().map(|p| p.throughput_rps).fold(1.0, f64::max) * 1.12;
    let latencies = measured.iter().flat_map(|p| {
        let l = p.latency_ms.as_ref().unwrap();
        [l.p50, l.p99]
    });
    let (y_min, y_max) =
        latencies.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y_min, y_max) = if y_max > 0.0 {
        ((y_min.max(0.001) * 0.7), (y_max * 1.6).max(y_min * 2.0))
    } else {
        (0.1, 10.0)
    };

    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 22))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())
        .map_err(fail)?;
    chart
        .configure_mesh()
        .x_desc("throughput (requests/s)")
        .y_desc("latency (ms): p99 solid, p50 dashed")
        .y_labels(10)
        // The light lines of a log axis crowd together near each power of
        // ten into a grey band; the labelled lines are grid enough.
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| short(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(fail)?;

    let mut protocols: Vec<&str> = measured.iter().map(|p| p.protocol).collect();
    protocols.dedup();
    for (i, protocol) in protocols.iter().enumerate() {
        let color = COLORS[i % COLORS.len()].to_rgba();
        let mine: Vec<&&PointResult> =
            measured.iter().filter(|p| p.protocol == *protocol).collect();
        let at = |pick: fn(&super::report::Latency) -> f64| -> Vec<(f64, f64)> {
            mine.iter().map(|p| (p.throughput_rps, pick(p.latency_ms.as_ref().unwrap()))).collect()
        };
        let (p99, p50) = (at(|l| l.p99), at(|l| l.p50));

        chart
            .draw_series(LineSeries::new(p99.clone(), color.stroke_width(2)))
            .map_err(fail)?
            .label(*protocol)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
        chart.draw_series(p99.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(fail)?;
        chart
            .draw_series(DashedLineSeries::new(p50.clone(), 6, 4, color.stroke_width(1)))
            .map_err(fail)?;
        chart
            .draw_series(p50.iter().map(|&p| Circle::new(p, 3, color.stroke_width(1))))
            .map_err(fail)?;

        let labels = mine.iter().zip(&p99).map(|(point, &at)| {
            EmptyElement::at(at)
                + Text::new(point.load.clone(), (6, -18), (FONT, 13).into_font().color(&color))
        });
        chart.draw_series(labels).map_err(fail)?;
    }
    if measured.is_empty() {
        root.draw(&Text::new(
            "no request succeeded",
            (SIZE.0 as i32 / 2 - 90, SIZE.1 as i32 / 2),
            (FONT, 20),
        ))
        .map_err(fail)?;
    } else {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(fail)?;
    }
    Ok(())
}

/// A latency tick: as few digits as its size needs.
fn short(ms: f64) -> String {
    if ms >= 10.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        format!("{ms:.1}")
    } else if ms >= 0.1 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}
