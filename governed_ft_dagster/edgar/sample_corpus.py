"""A deterministic, synthetic EDGAR-shaped corpus (the offline default data) and a mirror of the real samples."""

from __future__ import annotations

import calendar
import hashlib
import html
import json
import random
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from governed_ft_dagster.atomic import atomic_write
from governed_ft_dagster.edgar.client import (
    archive_path,
    fiscal_period,
    normalize_cik,
    parse_company_tickers,
    parse_fiscal_year_end,
    submissions_name,
)

FIRST_SAMPLE_CIK = 9900001
MANIFEST_NAME = "sample_manifest.json"
CORPUS_VERSION = 2  # 2: amendments that restate Item 1A (a 10-K/A and a 10-Q/A)
SUBMISSION_COLUMNS = (
    "accessionNumber", "filingDate", "reportDate", "acceptanceDateTime", "act", "form", "fileNumber",
    "filmNumber", "items", "size", "isXBRL", "isInlineXBRL", "primaryDocument", "primaryDocDescription",
)


@dataclass(frozen=True)
class SampleCompany:
    """A fictional registrant in the synthetic corpus."""

    cik: str
    ticker: str
    name: str
    sector: str
    fiscal_year_end: str
    week_based: bool


@dataclass(frozen=True)
class SampleFiling:
    """One 10-K/10-Q primary document in a local corpus and the extraction outcome it should produce."""

    cik: str
    ticker: str
    entity_name: str
    form: str
    accession_number: str
    filing_date: str
    report_date: str
    fiscal_year: int
    fiscal_period: str
    primary_document: str
    archive_path: str
    expected_status: str | None
    defect: str | None = None
    note: str = ""
    risk_factor_headings: tuple[str, ...] = ()
    source: str | None = None
    synthetic_accession: bool = False
    amends: str | None = None


@dataclass
class SampleManifest:
    """What a corpus build wrote: companies, filings with expected outcomes, and other documents."""

    root: Path
    kind: str
    seed: int | None
    fiscal_years: tuple[int, ...]
    companies: list[SampleCompany] = field(default_factory=list)
    filings: list[SampleFiling] = field(default_factory=list)
    other_documents: list[str] = field(default_factory=list)
    corpus_version: int = CORPUS_VERSION

    @property
    def tickers(self) -> list[str]:
        """Tickers of the companies, in CIK order."""
        return [c.ticker for c in self.companies]

    def by_accession(self) -> dict[str, SampleFiling]:
        """Filings keyed by accession number."""
        return {f.accession_number: f for f in self.filings}

    def in_period(self) -> list[SampleFiling]:
        """Filings whose fiscal year is one of the manifest's fiscal years."""
        return [f for f in self.filings if f.fiscal_year in self.fiscal_years]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form with paths relative to the root."""
        data = asdict(self)
        data["root"] = "."
        return data

    def write(self) -> Path:
        """Write the manifest as JSON next to the corpus."""
        path = self.root / MANIFEST_NAME
        atomic_write(path, (json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n").encode("utf-8"))
        return path


# ---------------------------------------------------------------------------
# Word lists (the project's own; nothing here is taken from a filing)
# ---------------------------------------------------------------------------

_NAME_STEMS = (
    "Aldermere", "Bramblecrest", "Corvane", "Dunmarrow", "Everhollow", "Fallowmere", "Glenhaven", "Harrowgate",
    "Ivorbrook", "Junipercrest", "Kestrelmark", "Larkspire", "Merrowind", "Northvale", "Osprell", "Pellridge",
    "Quillmoor", "Ravenholt", "Saltmeadow", "Thistlewood", "Umberfield", "Vantmoor", "Wrenfield", "Yarrowby",
)
_NAME_SUFFIXES = ("Holdings, Inc.", "Corporation", "Group, Inc.", "Industries, Inc.", "Company", "Brands, Inc.")
_STATES = (("DE", "Delaware"), ("NV", "Nevada"), ("OH", "Ohio"), ("MN", "Minnesota"), ("MD", "Maryland"))
_CITIES = (("Ashford", "CT", "06278"), ("Millbrook", "NY", "12545"), ("Fairhaven", "MA", "02719"),
           ("Riverton", "WY", "82501"), ("Clearwater", "MN", "55320"), ("Lakemont", "GA", "30552"))


@dataclass(frozen=True)
class _Sector:
    key: str
    sic: str
    sic_description: str
    label: str
    products: tuple[str, ...]
    customers: tuple[str, ...]
    inputs: tuple[str, ...]
    metric: tuple[str, ...]
    regulation: tuple[str, ...]


_SECTORS = (
    _Sector("software", "7372", "Services-Prepackaged Software", "Software",
            ("subscription software", "cloud analytics services", "security products", "workflow applications"),
            ("enterprise customers", "small and mid-sized businesses", "public sector agencies", "channel partners"),
            ("third-party data center capacity", "open source components", "hosted infrastructure services"),
            ("annual recurring revenue", "subscription revenue", "operating margin"),
            ("data privacy", "the use of artificial intelligence", "export controls")),
    _Sector("semiconductors", "3674", "Semiconductors & Related Devices", "Devices",
            ("analog integrated circuits", "power semiconductors", "sensor modules", "networking processors"),
            ("equipment manufacturers", "electronics distributors", "automotive suppliers"),
            ("wafer foundry capacity", "substrates and packaging services", "specialty gases"),
            ("net revenue", "gross margin", "operating income"),
            ("export controls", "conflict minerals", "product safety")),
    _Sector("retail", "5331", "Retail-Variety Stores", "Stores",
            ("home furnishings", "seasonal merchandise", "private-label apparel", "household essentials"),
            ("value-conscious shoppers", "online customers", "loyalty program members"),
            ("imported merchandise", "distribution center capacity", "ocean freight services"),
            ("comparable store sales", "net sales", "merchandise margin"),
            ("consumer protection", "wage and hour rules", "product labeling")),
    _Sector("medical", "3841", "Surgical & Medical Instruments & Apparatus", "Medical",
            ("surgical instruments", "diagnostic imaging systems", "implantable devices", "monitoring equipment"),
            ("hospitals", "ambulatory surgery centers", "group purchasing organizations"),
            ("medical-grade resins", "sterilization services", "electronic components"),
            ("net sales", "gross margin", "operating cash flow"),
            ("medical device approvals", "health care fraud and abuse", "patient data privacy")),
    _Sector("industrial", "3560", "General Industrial Machinery & Equipment", "Industrial",
            ("flow control equipment", "industrial pumps", "automation systems", "aftermarket parts"),
            ("municipal water utilities", "chemical processors", "energy producers"),
            ("steel and specialty alloys", "castings and forgings", "electronic controls"),
            ("orders", "segment margin", "free cash flow"),
            ("environmental protection", "workplace safety", "trade and tariffs")),
    _Sector("banking", "6022", "State Commercial Banks", "Financial",
            ("commercial loans", "residential mortgages", "deposit products", "treasury management services"),
            ("small businesses", "commercial real estate borrowers", "retail depositors"),
            ("core deposits", "wholesale funding", "third-party payment networks"),
            ("net interest income", "net interest margin", "credit quality"),
            ("bank capital requirements", "consumer financial protection", "anti-money laundering")),
    _Sector("food", "2000", "Food and Kindred Products", "Foods",
            ("packaged snacks", "frozen meals", "plant-based beverages", "baking mixes"),
            ("grocery retailers", "club stores", "foodservice distributors"),
            ("grains and edible oils", "packaging materials", "contract manufacturers"),
            ("net sales", "gross profit", "adjusted operating income"),
            ("food safety", "product labeling", "packaging waste")),
    _Sector("utilities", "4911", "Electric Services", "Energy",
            ("electric transmission service", "retail electricity", "natural gas distribution"),
            ("residential customers", "industrial customers", "wholesale counterparties"),
            ("natural gas fuel supply", "transformers and grid equipment", "purchased power"),
            ("rate base", "earnings", "cash flows from operations"),
            ("utility rate regulation", "air emissions", "reliability standards")),
)

_REGIONS = ("Europe", "the Asia-Pacific region", "Latin America", "Canada", "the Middle East")
_CATEGORIES = (
    "Risks Related to Our Business and Industry",
    "Macroeconomic and Market Risks",
    "Legal, Regulatory and Compliance Risks",
    "Risks Related to Information Technology and Cybersecurity",
    "Financial Risks",
    "Risks Related to Ownership of Our Common Stock",
)

# (category index, heading template, opening sentence templates)
_RISKS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (0, "Competition in the markets for our {product} is intense and could reduce our market share and margins.",
     ("We compete with companies that offer {product} at lower prices or with broader feature sets.",
      "New entrants and consolidation among existing competitors could intensify pricing pressure on our {product}.")),
    (0, "We depend on a limited number of suppliers for {input}, and supply disruptions could harm our business.",
     ("We obtain {input} from a small number of sources, some of which are located in a single region.",
      "Our suppliers may raise prices, allocate capacity to other customers or fail to meet our quality standards.")),
    (0, "If we fail to introduce new {product} that meet customer needs, our {metric} could decline.",
     ("The markets for our {product} change quickly as customer preferences and technologies evolve.",
      "Development programs for new {product} require significant investment before they generate revenue.")),
    (0, "A significant portion of our revenue depends on a relatively small number of {customers}.",
     ("Our largest {customers} account for a meaningful share of our {metric}.",
      "The loss of, or a significant reduction in purchases by, any of our larger {customers} could harm our results.")),
    (0, "Our success depends on our ability to attract, develop and retain qualified personnel.",
     ("Competition for experienced engineers, managers and sales staff remains strong in the markets where we operate.",
      "The unexpected departure of members of our senior leadership could disrupt the execution of our strategy.")),
    (0, "Product defects or quality problems with our {product} could expose us to liability and harm our reputation.",
     ("Our {product} are complex and may contain defects that are discovered only after they reach {customers}.",
      "Quality problems could require us to replace products, issue credits or defend claims.")),
    (0, "We may not realize the anticipated benefits of acquisitions, divestitures or strategic investments.",
     ("We regularly evaluate acquisitions and investments that we believe could complement our {product}.",
      "Integrating an acquired business may divert management attention and take longer than we expect.")),
    (1, "Adverse economic conditions could reduce demand for our {product} and increase our costs.",
     ("Demand for our {product} depends on the spending of {customers}, which tends to fall during downturns.",
      "Periods of slow growth, recession or financial market volatility could reduce orders and lengthen sales cycles.")),
    (1, "Inflation and changes in interest rates could increase our costs and reduce our {metric}.",
     ("Higher prices for labor, freight and {input} have increased our operating costs in recent periods.",
      "Rising interest rates increase our borrowing costs and may reduce the purchasing power of {customers}.")),
    (1, "Our international operations expose us to political, economic and currency risks in {region}.",
     ("We sell {product} in {region} and in other markets outside the United States.",
      "Changes in trade policy, sanctions or local economic conditions in {region} could disrupt our operations there.")),
    (1, "Fluctuations in foreign currency exchange rates could reduce our reported {metric}.",
     ("A portion of our revenue and expenses is denominated in currencies other than the U.S. dollar.",
      "A stronger U.S. dollar reduces the reported value of sales we make in other currencies.")),
    (1, "Climate change, severe weather and natural disasters could disrupt our operations and supply chain.",
     ("Some of our facilities and suppliers are located in areas exposed to storms, floods, heat or wildfires.",
      "Regulations intended to address climate change could increase our energy and compliance costs.")),
    (2, "We are subject to complex and changing laws and regulations concerning {regulation}.",
     ("Laws and regulations concerning {regulation} vary among jurisdictions and continue to evolve.",
      "Compliance with new requirements concerning {regulation} could require changes to our {product}.")),
    (2, "Litigation, investigations and other legal proceedings could result in significant costs.",
     ("From time to time we are party to claims involving commercial disputes, employment matters and our {product}.",
      "The outcome of legal proceedings is difficult to predict, and an unfavorable result could be material.")),
    (2, "Changes in tax laws or their interpretation could increase our effective tax rate.",
     ("We are subject to income and other taxes in the United States and in several other jurisdictions.",
      "Tax authorities may disagree with positions we have taken and assess additional taxes, interest or penalties.")),
    (2, "Our intellectual property may be difficult to protect, and we may face claims of infringement.",
     ("We rely on a combination of patents, trademarks, trade secrets and contractual terms to protect our {product}.",
      "Third parties may assert that our {product} infringe their rights and seek damages or injunctions.")),
    (3, "Cyberattacks and other security incidents could disrupt our operations and expose us to liability.",
     ("Our operations depend on information systems that process data about {customers} and our business.",
      "Attackers use increasingly sophisticated methods, including ransomware and social engineering.")),
    (3, "Failures or delays in upgrading our information technology systems could disrupt our business.",
     ("We are replacing several legacy systems that support ordering, billing and financial reporting.",
      "Implementation problems could delay shipments of our {product} or impair the accuracy of our records.")),
    (4, "Our indebtedness could limit our flexibility and adversely affect our financial condition.",
     ("We have outstanding notes and a revolving credit facility that contain financial and operating covenants.",
      "A downgrade of our credit ratings could increase the cost of borrowing and limit our access to capital.")),
    (4, "We may be required to record impairment charges for goodwill and other intangible assets.",
     ("We carry goodwill and intangible assets from prior acquisitions on our balance sheet.",
      "A sustained decline in our {metric} or market capitalization could indicate that an asset is impaired.")),
    (4, "Our results of operations may fluctuate significantly from quarter to quarter.",
     ("Our results, including {metric}, have varied in the past because of the timing of orders from {customers}.",
      "Seasonal patterns and the timing of large projects make it difficult to forecast results for any quarter.")),
    (5, "The market price of our common stock may be volatile.",
     ("The trading price of our common stock has fluctuated in response to our results and to market conditions.",
      "Announcements by competitors, analyst recommendations and general market trends could move our stock price.")),
    (5, "We cannot guarantee that we will continue to pay dividends or repurchase shares.",
     ("Our board of directors reviews our capital allocation program periodically and may change it at any time.",
      "Future dividends and repurchases depend on our cash flows, financial condition and other investment needs.")),
)

_MIDDLE = (
    "Any {adj} {event} could {hurt} {object}, and we may not be able to offset the effect through pricing or cost reductions.",
    "We have experienced {event_past} in the past, and similar conditions may recur with little warning.",
    "Our ability to respond depends in part on {dependency}, which is not entirely within our control.",
    "In addition, {party} may {party_action}, which could {hurt} our {metric}.",
    "We may incur {cost} costs in responding to these developments, and those costs could be significant.",
    "The effect of these risks may be greater in {region}, where we have expanded our presence in recent years.",
    "Although we maintain {control}, these measures may not prevent every {threat}.",
    "Even if we respond effectively, the time and resources required could divert attention from other priorities.",
    "These conditions could also lengthen the time it takes {customers} to complete purchasing decisions.",
    "We may be unable to pass increases in the cost of {input} through to {customers} on a timely basis.",
    "Changes in the mix of {product} we sell could also affect our {metric} from period to period.",
    "Our competitors may respond to these conditions more quickly or with greater resources than we can.",
    "Forecasting the effect of these developments is difficult, and our assumptions may prove inaccurate.",
    "Some of our contracts with {customers} limit our ability to adjust prices during their terms.",
    "Public reports about these matters, whether or not accurate, could also harm our reputation.",
    "We may need to make changes to our operations that increase costs or reduce flexibility.",
)
_FOLLOW_OPENERS = (
    "In addition, {party} could {party_action}.",
    "Our exposure to this risk has grown as our business with {customers} has expanded.",
    "These risks are more pronounced when demand for {product} changes quickly.",
    "We expect these pressures to continue in the near term.",
    "The same considerations apply to our operations in {region}.",
)
_CLOSERS = (
    "Any of these outcomes could materially and adversely affect our business, results of operations and financial condition.",
    "As a result, our {metric} could decline and our results could fall short of expectations.",
    "If any of these risks were to occur, our {metric} and cash flows could be adversely affected.",
    "Consequently, results for any single period may not be indicative of results for future periods.",
)
_FILL = {
    "adj": ("prolonged", "sudden", "significant", "sustained", "widespread", "unexpected"),
    "event": ("downturn in economic activity", "disruption in transportation networks", "increase in interest rates",
              "shortage of skilled labor", "decline in customer spending", "interruption at a key facility"),
    "event_past": ("periods of weak demand", "supply chain disruptions", "significant cost inflation",
                   "shortages of skilled labor", "interruptions at key facilities", "delays in customer orders"),
    "hurt": ("reduce", "delay", "adversely affect", "disrupt", "constrain"),
    "object": ("orders for our products", "our access to key materials", "the timing of customer purchases",
               "our gross margins", "our ability to meet delivery commitments"),
    "dependency": ("the performance of third parties", "the availability of financing on acceptable terms",
                   "the accuracy of our forecasts", "the cooperation of regulators and local authorities"),
    "party": ("our competitors", "our suppliers", "our distribution partners", "government authorities"),
    "party_action": ("change their pricing or terms", "reduce the capacity available to us",
                     "adopt new requirements with little notice", "pursue strategies that conflict with ours"),
    "cost": ("legal and compliance", "remediation", "restructuring", "additional operating"),
    "control": ("business continuity plans", "insurance coverage", "internal controls and monitoring programs",
                "contractual protections"),
    "threat": ("loss", "disruption", "incident", "failure"),
}

_NMC_TEMPLATES = (
    "There have been no material changes to the risk factors disclosed in Part I, Item 1A, \u201cRisk Factors,\u201d "
    "of our Annual Report on Form 10-K for the fiscal year ended {fy_end}.",
    "In addition to the other information in this Quarterly Report on Form 10-Q, readers should consider the risk "
    "factors discussed in Part I, Item 1A of our Annual Report on Form 10-K for the fiscal year ended {fy_end}, "
    "which could materially affect our business, financial condition or future results. There have been no "
    "material changes from the risk factors previously disclosed in that report.",
    "Our risk factors are described in Part I, Item 1A of our Annual Report on Form 10-K for the fiscal year ended "
    "{fy_end}. As of the date of this report, those risk factors have not materially changed.",
)
_RESTATE_INTRO = (
    "The risk factors set forth below update, and should be read together with, the risk factors described in "
    "Part I, Item 1A of our Annual Report on Form 10-K for the fiscal year ended {fy_end}. Except as set forth "
    "below, there have been no material changes to those risk factors."
)
_10K_INTRO = (
    "Our business, financial condition and results of operations are subject to a number of risks and "
    "uncertainties, including those described below. These risks are not the only ones we face. Additional risks "
    "that we do not currently consider material, or that are not presently known to us, could also affect us. "
    "The following discussion should be read together with \u201cManagement\u2019s Discussion and Analysis of "
    "Financial Condition and Results of Operations\u201d and the consolidated financial statements in Part II of "
    "this report."
)


def _fill(template: str, rng: random.Random, ctx: dict[str, str]) -> str:
    def pick(m: re.Match[str]) -> str:
        key = m[1]
        if key in ctx:
            return ctx[key]
        return rng.choice(_FILL[key])

    return re.sub(r"\{(\w+)\}", pick, template)


def _sector_ctx(sector: _Sector, rng: random.Random) -> dict[str, str]:
    return {
        "product": rng.choice(sector.products),
        "customers": rng.choice(sector.customers),
        "input": rng.choice(sector.inputs),
        "metric": rng.choice(sector.metric),
        "regulation": rng.choice(sector.regulation),
        "region": rng.choice(_REGIONS),
    }


def _paragraph(opener: str, rng: random.Random, ctx: dict[str, str], used: set[str] | None = None) -> str:
    used = set() if used is None else used
    middles = [m for m in _MIDDLE if m not in used] or list(_MIDDLE)
    chosen = rng.sample(middles, min(len(middles), rng.randint(2, 4)))
    used.update(chosen)
    sentences = [opener, *chosen]
    if rng.random() < 0.6:
        sentences.append(rng.choice(_CLOSERS))
    return " ".join(_fill(s, rng, ctx) for s in sentences)


def _risk_paragraphs(openers: Sequence[str], count: int, rng: random.Random, ctx: dict[str, str]) -> list[str]:
    starts = list(openers)
    rng.shuffle(starts)
    starts += rng.sample(_FOLLOW_OPENERS, max(0, count - len(starts)))
    used: set[str] = set()
    return [_paragraph(start, rng, ctx, used) for start in starts[:count]]


@dataclass
class _Risk:
    template: int
    category: int
    heading: str
    paragraphs: list[str]


def _risk_pool(sector: _Sector, rng: random.Random) -> list[_Risk]:
    chosen = sorted(rng.sample(range(len(_RISKS)), rng.randint(12, 17)))
    pool = []
    for idx in chosen:
        category, heading, openers = _RISKS[idx]
        ctx = _sector_ctx(sector, rng)
        paragraphs = _risk_paragraphs(openers, rng.randint(1, 4), rng, ctx)
        pool.append(_Risk(idx, category, _fill(heading, rng, ctx), paragraphs))
    return pool


def _amended_risks(risks: list[_Risk], pool: list[_Risk], sector: _Sector, rng: random.Random) -> list[_Risk]:
    """The risk factors as an amendment restates them: one revised in its opening paragraph, one added."""
    out = [_Risk(r.template, r.category, r.heading, list(r.paragraphs)) for r in risks]
    revised = out[rng.randrange(len(out))]
    ctx = _sector_ctx(sector, rng)
    revised.paragraphs[0] = _paragraph(rng.choice(_RISKS[revised.template][2]), rng, ctx) + (
        " We have revised this risk factor to reflect developments since the original filing.")
    unused = [i for i in range(len(_RISKS)) if i not in {r.template for r in out}]
    template = rng.choice(unused)
    category, heading, openers = _RISKS[template]
    added = _Risk(template, category, _fill(heading, rng, ctx), _risk_paragraphs(openers, rng.randint(2, 3), rng, ctx))
    return sorted(out + [added], key=lambda r: r.category)


def _year_version(pool: list[_Risk], sector: _Sector, rng: random.Random) -> list[_Risk]:
    """This year's risk factors: mostly last year's, one dropped, some paragraphs rewritten."""
    dropped = rng.randrange(len(pool))
    out = []
    for i, risk in enumerate(pool):
        if i == dropped:
            continue
        paragraphs = list(risk.paragraphs)
        if rng.random() < 0.3:
            k = rng.randrange(len(paragraphs))
            paragraphs[k] = _paragraph(rng.choice(_RISKS[risk.template][2]), rng, _sector_ctx(sector, rng))
        out.append(_Risk(risk.template, risk.category, risk.heading, paragraphs))
    return out


def _body_paragraph(rng: random.Random, ctx: dict[str, str], topic: str) -> str:
    bank = {
        "business": (
            "{name} designs, manufactures and sells {product} to {customers} in the United States and {region}.",
            "We organize our operations around product lines that share common technology, sales channels and suppliers.",
            "Our strategy emphasizes disciplined investment, operational efficiency and long-term relationships with {customers}.",
            "We sell through a direct sales force and through distributors, and we support customers after the sale.",
            "As of the end of the fiscal year we had approximately {employees} full-time employees.",
        ),
        "mdna": (
            "{metric_cap} for the period reflected higher volumes, partially offset by unfavorable pricing and mix.",
            "Operating expenses increased primarily because of higher compensation costs and continued investment in {product}.",
            "We believe that cash on hand, cash generated from operations and our credit facility will be sufficient to fund our needs.",
            "Cash used in investing activities consisted primarily of capital expenditures for manufacturing and information systems.",
        ),
        "generic": (
            "The information in this item is presented on a basis consistent with prior periods.",
            "Management reviews these matters regularly with the audit committee of the board of directors.",
            "We do not expect these matters to have a material effect on our consolidated financial statements.",
        ),
    }[topic]
    return " ".join(_fill(s, rng, ctx) for s in rng.sample(bank, min(len(bank), rng.randint(2, 4))))


# ---------------------------------------------------------------------------
# Calendars
# ---------------------------------------------------------------------------


def _last_weekday(year: int, month: int, weekday: int) -> date:
    last = date(year, month, calendar.monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _nearest_weekday(target: date, weekday: int) -> date:
    delta = (weekday - target.weekday()) % 7
    return target + timedelta(days=delta if delta <= 3 else delta - 7)


def _month_end(d: date, months: int) -> date:
    month0 = d.month - 1 + months
    year, month = d.year + month0 // 12, month0 % 12 + 1
    return date(year, month, calendar.monthrange(year, month)[1])


_CALENDARS = ("1231", "sep-sat", "0630", "jan-sun", "0331")


def _year_end(kind: str, year: int) -> date:
    if kind == "sep-sat":
        return _last_weekday(year, 9, calendar.SATURDAY)
    if kind == "jan-sun":
        return _nearest_weekday(date(year, 1, 31), calendar.SUNDAY)
    return date(year, int(kind[:2]), calendar.monthrange(year, int(kind[:2]))[1])


def _quarter_ends(kind: str, year: int) -> list[date]:
    previous = _year_end(kind, year - 1)
    if kind in ("sep-sat", "jan-sun"):
        return [previous + timedelta(weeks=13 * q) for q in (1, 2, 3)]
    return [_month_end(previous, 3 * q) for q in (1, 2, 3)]


def _long_date(d: date) -> str:
    return f"{calendar.month_name[d.month]} {d.day}, {d.year}"


# ---------------------------------------------------------------------------
# HTML rendering
# ---------------------------------------------------------------------------

_FONT = "font-family:'Times New Roman',serif;font-size:10pt"
_HEADING_VARIANTS = ("workiva", "split", "table", "upper", "two_line", "dash")


def _e(text: str) -> str:
    return html.escape(text, quote=False)


class _Page:
    """Accumulates body blocks, inserting page footers, running headers and page breaks."""

    def __init__(self, rng: random.Random, footer: str, first_page: int) -> None:
        self.rng = rng
        self.footer = footer
        self.page = first_page
        self.blocks: list[str] = []
        self.since_break = 0
        self.per_page = rng.randint(6, 10)
        self.anchors: dict[str, int] = {}

    def _break(self) -> str:
        style = self.rng.randrange(3)
        number = f'<div style="text-align:center"><span style="{_FONT}">{self.page}</span></div>'
        running = f'<div style="text-align:center"><span style="{_FONT}">{_e(self.footer)} | {self.page}</span></div>'
        parts = {0: number, 1: running, 2: running + number}[style]
        self.page += 1
        self.since_break = 0
        self.per_page = self.rng.randint(6, 10)
        return (f'<div style="height:36pt">{parts}</div><hr style="page-break-after:always"/>'
                f'<div><a href="#toc" style="{_FONT}">Table of Contents</a></div>')

    def anchor(self, name: str) -> None:
        self.anchors[name] = self.page
        self.blocks.append(f'<div id="{name}"></div>')

    def add(self, block: str) -> None:
        if self.since_break >= self.per_page:
            self.blocks.append(self._break())
        self.blocks.append(block)
        self.since_break += 1

    def paragraph(self, text: str) -> None:
        if self.since_break + 1 >= self.per_page and self.rng.random() < 0.35:
            words = text.split(" ")
            cuts = [i for i in range(len(words) // 3, 2 * len(words) // 3) if words[i][:1].islower()
                    and words[i - 1][-1:].isalpha()]
            if cuts:
                cut = self.rng.choice(cuts)
                self.add(_para(" ".join(words[:cut])))
                self.blocks.append(self._break())
                self.blocks.append(_para(" ".join(words[cut:])))
                self.since_break = 1
                return
        self.add(_para(text))


def _para(text: str) -> str:
    return f'<div style="margin-top:9pt;text-align:justify"><span style="{_FONT}">{_e(text)}</span></div>'


def _bold(text: str, extra: str = "") -> str:
    return f'<span style="{_FONT};font-weight:700{extra}">{_e(text)}</span>'


def _item_heading(variant: str, number: str, title: str) -> str:
    label = f"Item {number}."
    if variant == "upper":
        return f'<p style="margin-top:12pt;{_FONT};font-weight:bold">{_e(label.upper())} {_e(title.upper())}</p>'
    if variant == "table":
        return ('<table style="width:100%;border-collapse:collapse"><tr>'
                f'<td style="width:12%;vertical-align:top">{_bold(label)}</td>'
                f'<td style="vertical-align:top">{_bold(title)}</td></tr></table>')
    if variant == "two_line":
        return f'<div style="margin-top:12pt">{_bold(label.upper())}</div><div>{_bold(title.upper())}</div>'
    if variant == "dash":
        return f'<p style="margin-top:12pt;{_FONT}"><b>Item {_e(number)} \u2014 {_e(title)}</b></p>'
    if variant == "split" and len(title) > 4:
        return (f'<div style="margin-top:12pt">{_bold(label)}{_bold(chr(160) * 2 + title[:2])}'
                f'{_bold(title[2:])}</div>')
    return f'<div style="margin-top:12pt;padding-left:45pt;text-indent:-45pt">{_bold(label + chr(160) * 4 + title)}</div>'


def _sub_heading(rng: random.Random, text: str) -> str:
    if rng.random() < 0.5:
        return f'<div style="margin-top:9pt">{_bold(text, ";font-style:italic")}</div>'
    return f'<p style="margin-top:9pt;{_FONT}"><b><i>{_e(text)}</i></b></p>'


def _category_heading(text: str) -> str:
    return f'<div style="margin-top:12pt;text-align:center">{_bold(text)}</div>'


def _part_heading(text: str) -> str:
    return f'<div style="margin-top:18pt;text-align:center">{_bold(text)}</div>'


def _ix_header(company: SampleCompany, form: str, fy: int, period: str, start: date, end: date,
               amendment: bool) -> str:
    mmdd = company.fiscal_year_end
    facts = (
        ("dei:AmendmentFlag", "true" if amendment else "false"),
        ("dei:DocumentFiscalYearFocus", str(fy)),
        ("dei:DocumentFiscalPeriodFocus", period),
        ("dei:EntityCentralIndexKey", company.cik),
        ("dei:CurrentFiscalYearEndDate", f"--{mmdd[:2]}-{mmdd[2:]}"),
        ("dei:DocumentType", form),
    )
    hidden = "".join(f'<ix:nonNumeric contextRef="c-1" name="{n}" id="f-{i + 1}">{v}</ix:nonNumeric>'
                     for i, (n, v) in enumerate(facts))
    context = (f'<xbrli:context id="c-1"><xbrli:entity><xbrli:identifier scheme="http://www.sec.gov/CIK">'
               f"{company.cik}</xbrli:identifier></xbrli:entity><xbrli:period><xbrli:startDate>{start}"
               f"</xbrli:startDate><xbrli:endDate>{end}</xbrli:endDate></xbrli:period></xbrli:context>")
    return (f'<div style="display:none"><ix:header><ix:hidden>{hidden}</ix:hidden><ix:resources>{context}'
            "</ix:resources></ix:header></div>")


def _document(company: SampleCompany, title: str, header: str, body: str, charset: str | None) -> str:
    head = '<meta http-equiv="Content-Type" content="text/html' + (f"; charset={charset}" if charset else "") + '"/>'
    decl = "" if charset else "<?xml version='1.0' encoding='ASCII'?>\n"
    return (
        f"{decl}<!-- Synthetic sample filing generated by governed_ft_dagster.edgar.sample_corpus -->\n"
        '<html xmlns="http://www.w3.org/1999/xhtml" xmlns:ix="http://www.xbrl.org/2013/inlineXBRL" '
        'xmlns:dei="http://xbrl.sec.gov/dei/2023" xmlns:xbrli="http://www.xbrl.org/2003/instance" '
        f'xml:lang="en-US"><head>{head}\n<title>{_e(title)}</title></head><body>{header}{body}</body></html>\n'
    )


def _cover(company: SampleCompany, form: str, period_end: date, state: tuple[str, str],
           city: tuple[str, str, str], file_no: str, amendment: bool) -> str:
    annual = form.startswith("10-K")
    kind = "ANNUAL" if annual else "QUARTERLY"
    section = "SECTION 13 OR 15(d)"
    lines = [
        _part_heading("UNITED STATES"),
        _part_heading("SECURITIES AND EXCHANGE COMMISSION"),
        f'<div style="text-align:center"><span style="{_FONT}">Washington, D.C. 20549</span></div>',
        _part_heading(f"FORM {form}" + (" (Amendment No. 1)" if amendment else "")),
        f'<div><span style="{_FONT}">\u2612 {kind} REPORT PURSUANT TO {section} OF THE SECURITIES EXCHANGE ACT OF '
        "1934</span></div>",
        f'<div><span style="{_FONT}">For the {"fiscal year" if annual else "quarterly period"} ended '
        f'<ix:nonNumeric contextRef="c-1" name="dei:DocumentPeriodEndDate" id="f-90">{_long_date(period_end)}'
        "</ix:nonNumeric></span></div>",
        f'<div><span style="{_FONT}">or</span></div>',
        f'<div><span style="{_FONT}">\u2610 TRANSITION REPORT PURSUANT TO {section} OF THE SECURITIES EXCHANGE ACT '
        "OF 1934</span></div>",
        f'<div><span style="{_FONT}">Commission File Number: {file_no}</span></div>',
        f'<div style="text-align:center">{_bold(company.name)}</div>',
        '<table style="width:100%"><tr>'
        f'<td style="text-align:center"><span style="{_FONT}">{state[1]}</span></td>'
        f'<td style="text-align:center"><span style="{_FONT}">{_fake_ein(company.cik)}</span></td></tr><tr>'
        f'<td style="text-align:center"><span style="{_FONT}">(State or other jurisdiction of incorporation)</span></td>'
        f'<td style="text-align:center"><span style="{_FONT}">(I.R.S. Employer Identification No.)</span></td></tr>'
        "</table>",
        f'<div style="text-align:center"><span style="{_FONT}">100 Commerce Way, {city[0]}, {city[1]} {city[2]}'
        "</span></div>",
        '<table style="width:100%"><tr><td>Title of each class</td><td>Trading symbol(s)</td>'
        "<td>Name of each exchange on which registered</td></tr>"
        f"<tr><td>Common Stock, $0.01 par value</td><td>{company.ticker}</td><td>The Nasdaq Stock Market LLC</td>"
        "</tr></table>",
        f'<div><span style="{_FONT}">Indicate by check mark whether the registrant (1) has filed all reports '
        "required to be filed by Section 13 or 15(d) of the Securities Exchange Act of 1934 during the preceding "
        "12 months, and (2) has been subject to such filing requirements for the past 90 days. Yes \u2612 No "
        "\u2610</span></div>",
        '<table style="width:100%"><tr><td>Large accelerated filer</td><td>\u2612</td>'
        "<td>Accelerated filer</td><td>\u2610</td></tr><tr><td>Non-accelerated filer</td><td>\u2610</td>"
        "<td>Smaller reporting company</td><td>\u2610</td></tr></table>",
    ]
    if annual:
        lines.append(
            f'<div><span style="{_FONT}">DOCUMENTS INCORPORATED BY REFERENCE: Portions of the registrant\u2019s '
            "definitive proxy statement for its next annual meeting of shareholders are incorporated by reference "
            "into Part III of this Annual Report on Form 10-K.</span></div>"
        )
    return "".join(lines)


def _fake_ein(cik: str) -> str:
    digits = f"{int(cik) * 7919 % 10**9:09d}"
    return f"{digits[:2]}-{digits[2:]}"


def _toc(rows: list[tuple[str, str, str, str, int | None]]) -> str:
    cells = []
    for part, key, item, title, page in rows:
        if part:
            cells.append(f'<tr><td colspan="3">{_bold(part)}</td></tr>')
            continue
        anchor = "#" + _anchor_name(key)
        cells.append(
            f'<tr><td style="width:15%"><span style="{_FONT}"><a href="{anchor}">Item {_e(item)}.</a></span></td>'
            f'<td><span style="{_FONT}"><a href="{anchor}">{_e(title)}</a></span></td>'
            f'<td style="text-align:right"><span style="{_FONT}">{page if page is not None else ""}</span></td></tr>'
        )
    return (f'<div id="toc"></div><div style="text-align:center">{_bold("TABLE OF CONTENTS")}</div>'
            f'<table style="width:100%;border-collapse:collapse">{"".join(cells)}</table>'
            '<hr style="page-break-after:always"/>')


def _anchor_name(item: str) -> str:
    return "item-" + item.lower().replace(" ", "").replace(".", "")


# ---------------------------------------------------------------------------
# Filing documents
# ---------------------------------------------------------------------------

_10K_ITEMS = (
    ("PART I", None, None), ("", "1", "Business"), ("", "1A", "Risk Factors"),
    ("", "1B", "Unresolved Staff Comments"), ("", "1C", "Cybersecurity"), ("", "2", "Properties"),
    ("", "3", "Legal Proceedings"), ("", "4", "Mine Safety Disclosures"), ("PART II", None, None),
    ("", "5", "Market for Registrant\u2019s Common Equity, Related Stockholder Matters and Issuer Purchases of "
     "Equity Securities"), ("", "6", "[Reserved]"),
    ("", "7", "Management\u2019s Discussion and Analysis of Financial Condition and Results of Operations"),
    ("", "7A", "Quantitative and Qualitative Disclosures About Market Risk"),
    ("", "8", "Financial Statements and Supplementary Data"),
    ("", "9", "Changes in and Disagreements with Accountants on Accounting and Financial Disclosure"),
    ("", "9A", "Controls and Procedures"), ("", "9B", "Other Information"),
    ("", "9C", "Disclosure Regarding Foreign Jurisdictions that Prevent Inspections"), ("PART III", None, None),
    ("", "10", "Directors, Executive Officers and Corporate Governance"), ("", "11", "Executive Compensation"),
    ("", "12", "Security Ownership of Certain Beneficial Owners and Management and Related Stockholder Matters"),
    ("", "13", "Certain Relationships and Related Transactions, and Director Independence"),
    ("", "14", "Principal Accountant Fees and Services"), ("PART IV", None, None),
    ("", "15", "Exhibit and Financial Statement Schedules"), ("", "16", "Form 10-K Summary"),
)
_10Q_ITEMS = (
    ("PART I \u2014 FINANCIAL INFORMATION", None, None), ("", "1", "Financial Statements"),
    ("", "2", "Management\u2019s Discussion and Analysis of Financial Condition and Results of Operations"),
    ("", "3", "Quantitative and Qualitative Disclosures About Market Risk"), ("", "4", "Controls and Procedures"),
    ("PART II \u2014 OTHER INFORMATION", None, None), ("", "1", "Legal Proceedings"), ("", "1A", "Risk Factors"),
    ("", "2", "Unregistered Sales of Equity Securities and Use of Proceeds"),
    ("", "3", "Defaults Upon Senior Securities"), ("", "4", "Mine Safety Disclosures"),
    ("", "5", "Other Information"), ("", "6", "Exhibits"),
)
_SHORT_ITEMS = {"1B": "None.", "4": "Not applicable.", "6": "", "9": "None.", "9C": "Not applicable.", "16": "None."}


@dataclass
class _Plan:
    """Everything needed to render one filing document."""

    company: SampleCompany
    sector: _Sector
    form: str
    fiscal_year: int
    period: str
    period_start: date
    period_end: date
    prior_fy_end: date
    risks: list[_Risk]
    variant: str
    q_mode: str = "nmc"  # 10-Q Item 1A: nmc | restate | omitted
    k_mode: str = "normal"  # 10-K Item 1A: normal | missing | incorporated
    amendment: bool = False
    restates: bool = False  # an amendment that restates Item 1A in full (else a Part III-only 10-K/A)
    original_filed: date | None = None


def _financial_table(rng: random.Random, label: str) -> str:
    sales = rng.randint(800, 9000)
    cost = sales * rng.randint(45, 70) // 100
    opex = (sales - cost) * rng.randint(40, 75) // 100
    income = sales - cost - opex
    rows = (("Net sales", sales), ("Cost of sales", cost), ("Gross margin", sales - cost),
            ("Operating expenses", opex), ("Operating income", income), ("Net income", income * 78 // 100))
    cells = "".join(
        f"<tr><td><span style=\"{_FONT}\">{label}</span></td><td style=\"text-align:right\">"
        f"<span style=\"{_FONT}\">{value:,}</span></td></tr>" for label, value in rows
    )
    return (f'<div style="text-align:center">{_bold(label)}</div>'
            f'<div style="text-align:center"><span style="{_FONT}">(In millions)</span></div>'
            f'<table style="width:100%">{cells}</table>')


def _render(plan: _Plan, rng: random.Random, charset: str | None = None) -> tuple[str, list[str], tuple[int, int]]:
    """Render a filing; returns (html, Risk Factors sub-headings, (start, end) character span of Item 1A)."""
    company, sector = plan.company, plan.sector
    annual = plan.form.startswith("10-K")
    ctx = {**_sector_ctx(sector, rng), "name": company.name, "employees": f"{rng.randint(2, 90) * 500:,}"}
    ctx["metric_cap"] = ctx["metric"][:1].upper() + ctx["metric"][1:]
    short = company.name.split(" ")[0]
    footer = f"{short} | {plan.fiscal_year} Form {plan.form.removesuffix('/A')}"
    page = _Page(rng, footer, first_page=3)
    items = _10K_ITEMS if annual else _10Q_ITEMS
    if plan.amendment and not plan.restates:
        items = tuple(i for i in items if i[0] in ("PART III", "PART IV") or (i[1] or "") in
                      ("10", "11", "12", "13", "14", "15"))
    headings: list[str] = []
    span = (0, 0)
    fy_end_text = _long_date(plan.prior_fy_end)
    marker_start, marker_end = "\x00RF-START\x00", "\x00RF-END\x00"
    in_part_two = False

    if plan.amendment and plan.restates:
        base, kind = plan.form.removesuffix("/A"), "Annual" if annual else "Quarterly"
        period = "fiscal year" if annual else "quarterly period"
        filed = f", originally filed on {_long_date(plan.original_filed)}" if plan.original_filed else ""
        page.add(_part_heading("EXPLANATORY NOTE"))
        page.paragraph(
            f"This Amendment No. 1 on Form {plan.form} amends the {kind} Report on Form {base} of {company.name} for "
            f"the {period} ended {_long_date(plan.period_end)}{filed}. It is filed to restate "
            f"{'Part I' if annual else 'Part II'}, Item 1A, Risk Factors, in its entirety: one risk factor is revised "
            "and one is added. Except as described above, no other information in the original report is amended."
        )
    elif plan.amendment:
        page.add(_part_heading("EXPLANATORY NOTE"))
        page.paragraph(
            f"This Amendment No. 1 on Form 10-K/A amends the Annual Report on Form 10-K of {company.name} for the "
            f"fiscal year ended {_long_date(plan.period_end)}. It is filed solely to include the information "
            "required by Part III of Form 10-K, because our definitive proxy statement will not be filed within "
            "120 days after the end of the fiscal year. No other part of the original report is amended."
        )
    elif annual:
        page.add(_part_heading("FORWARD-LOOKING STATEMENTS"))
        ref = ("those discussed in Part I, Item 1A of this Form 10-K under the heading \u201cRisk Factors.\u201d"
               if plan.k_mode != "missing" else "those discussed elsewhere in this Form 10-K.")
        page.paragraph(
            "This Annual Report on Form 10-K contains forward-looking statements that involve risks and "
            "uncertainties. Words such as \u201cexpects,\u201d \u201cplans,\u201d \u201cbelieves\u201d and "
            "\u201cmay\u201d identify such statements. Actual results could differ materially because of "
            f"factors including, but not limited to, {ref}"
        )

    toc_rows: list[tuple[str, str, str, str, int | None]] = []
    for part, number, title in items:
        if part:
            in_part_two = part.startswith("PART II") and not part.startswith("PART III")
            page.add(_part_heading(part))
            toc_rows.append((part, "", "", "", None))
            continue
        assert number is not None and title is not None
        is_rf = number == "1A" and (annual or in_part_two)
        if is_rf and ((annual and plan.k_mode == "missing") or (not annual and plan.q_mode == "omitted")):
            continue
        key = ("II-" if in_part_two and not annual else "") + number
        page.anchor(_anchor_name(key))
        toc_rows.append(("", key, number, title, page.page))
        if is_rf:
            page.blocks.append(marker_start)
        page.add(_item_heading(plan.variant if is_rf else "workiva", number, title))
        if is_rf:
            headings = _render_risk_section(plan, page, rng, fy_end_text)
            page.blocks.append(marker_end)
        elif annual and number in _SHORT_ITEMS:
            if _SHORT_ITEMS[number]:
                page.add(_para(_SHORT_ITEMS[number]))
        elif not annual and in_part_two and number in ("3", "4"):
            page.add(_para("None." if number == "3" else "Not applicable."))
        elif number in ("1",) and annual:
            for _ in range(rng.randint(3, 5)):
                page.paragraph(_body_paragraph(rng, ctx, "business"))
        elif (annual and number == "7") or (not annual and number == "2" and not in_part_two):
            page.paragraph(_body_paragraph(rng, ctx, "mdna"))
            xref = "Part I, Item 1A of this Form 10-K" if annual else "Part II, Item 1A of this Form 10-Q"
            if (annual and plan.k_mode == "missing") or (not annual and plan.q_mode == "omitted"):
                xref = "our most recent Annual Report on Form 10-K"
            page.paragraph(
                "The discussion below should be read together with our consolidated financial statements. For a "
                f"discussion of factors that could affect our results, see the risk factors described in {xref}."
            )
            for _ in range(rng.randint(1, 3)):
                page.paragraph(_body_paragraph(rng, ctx, "mdna"))
        elif (annual and number == "8") or (not annual and number == "1" and not in_part_two):
            page.add(_financial_table(rng, "CONSOLIDATED STATEMENTS OF OPERATIONS"))
            page.paragraph(_body_paragraph(rng, ctx, "generic"))
        elif number in ("10", "11", "12", "13", "14") and not (plan.amendment and not plan.restates):
            page.add(_para("The information required by this item is incorporated by reference to our definitive "
                           "proxy statement for the next annual meeting of shareholders."))
        else:
            page.paragraph(_body_paragraph(rng, ctx, "generic"))
    page.add(_part_heading("SIGNATURES"))
    page.add(_para(f"Pursuant to the requirements of the Securities Exchange Act of 1934, the registrant has duly "
                   f"caused this report to be signed on its behalf by the undersigned, thereunto duly authorized. "
                   f"{company.name}"))

    state = _STATES[int(company.cik) % len(_STATES)]
    city = _CITIES[int(company.cik) % len(_CITIES)]
    file_no = f"001-{30000 + int(company.cik) % 10000:05d}"
    header = _ix_header(company, plan.form, plan.fiscal_year, plan.period, plan.period_start, plan.period_end,
                        plan.amendment)
    cover = _cover(company, plan.form, plan.period_end, state, city, file_no, plan.amendment)
    body = cover + '<hr style="page-break-after:always"/>' + _toc(toc_rows) + "".join(page.blocks)
    title = f"{company.ticker.lower()}-{plan.period_end:%Y%m%d}"
    doc = _document(company, title, header, body, charset)
    if marker_start in doc:
        start = doc.index(marker_start)
        doc = doc.replace(marker_start, "", 1)
        end = doc.index(marker_end)
        doc = doc.replace(marker_end, "", 1)
        span = (start, end)
    return doc, headings, span


def _render_risk_section(plan: _Plan, page: _Page, rng: random.Random, fy_end_text: str) -> list[str]:
    headings: list[str] = []
    if plan.form.startswith("10-K"):
        if plan.k_mode == "incorporated":
            first, last = sorted(rng.sample(range(14, 40), 2))
            page.add(_para(
                "The information required by this item is incorporated by reference to the section captioned "
                f"\u201cRisk Factors\u201d on pages {first} through {last} of our Annual Report to Shareholders, "
                "which is filed as Exhibit 13 to this Form 10-K."
            ))
            return headings
        page.paragraph(_10K_INTRO)
        current = -1
        for risk in plan.risks:
            if risk.category != current:
                current = risk.category
                page.add(_category_heading(_CATEGORIES[current]))
            page.add(_sub_heading(rng, risk.heading))
            headings.append(risk.heading)
            for text in risk.paragraphs:
                page.paragraph(text)
        return headings
    if plan.q_mode == "nmc":
        page.add(_para(rng.choice(_NMC_TEMPLATES).format(fy_end=fy_end_text)))
        return headings
    page.paragraph(_RESTATE_INTRO.format(fy_end=fy_end_text))
    chars = 0
    for risk in plan.risks:
        page.add(_sub_heading(rng, risk.heading))
        headings.append(risk.heading)
        for text in risk.paragraphs:
            page.paragraph(text)
            chars += len(text)
        if chars > 3500 and len(headings) >= 2:
            break
    return headings


# ---------------------------------------------------------------------------
# Corpus build
# ---------------------------------------------------------------------------


def _company(index: int, seed: int) -> tuple[SampleCompany, _Sector, str]:
    rng = random.Random(f"company:{seed}:{index}")
    stems = list(_NAME_STEMS)
    random.Random(f"stems:{seed}").shuffle(stems)
    stem = stems[index % len(stems)]
    sector = _SECTORS[rng.randrange(len(_SECTORS))]
    calendar_kind = _CALENDARS[index % len(_CALENDARS)]
    name = f"{stem} {sector.label} {rng.choice(_NAME_SUFFIXES)}"
    ticker = (stem[:3] + stem[-1]).upper()
    cik = normalize_cik(FIRST_SAMPLE_CIK + index)
    week_based = calendar_kind in ("sep-sat", "jan-sun")
    return SampleCompany(cik, ticker, name, sector.key, "", week_based), sector, calendar_kind


@dataclass
class _Row:
    accession: str
    filing_date: date
    report_date: date | None
    form: str
    document: str
    description: str
    size: int = 0


class _Accessions:
    def __init__(self, cik: str, rng: random.Random) -> None:
        self.prefix = cik
        self.rng = rng
        self.counters: dict[int, int] = {}

    def next(self, filed: date) -> str:
        yy = filed.year % 100
        self.counters[yy] = self.counters.get(yy, self.rng.randint(1, 90)) + self.rng.randint(1, 25)
        return f"{self.prefix}-{yy:02d}-{self.counters[yy]:06d}"


_DEFECT_SLOTS = (
    # (defect, preferred company index, form, which fiscal year: 0 first / -1 last, quarter)
    ("empty", 1, "10-Q", -1, 1),
    ("truncated", 2, "10-K", 0, None),
    ("cp1252", 3, "10-K", -1, None),
    ("no_risk_factors", 4, "10-K", 0, None),
    ("incorporated_by_reference", 6, "10-K", -1, None),
)
_EXPECTED = {
    "empty": "error",
    "truncated": "extracted",
    "cp1252": "extracted",
    "no_risk_factors": "not_found",
    "incorporated_by_reference": "incorporated_by_reference",
}


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=1, ensure_ascii=True) + "\n").encode("ascii")


def build_sample_corpus(
    root: Path, companies: int = 12, fiscal_years: Iterable[int] = (2023, 2024), seed: int = 0
) -> SampleManifest:
    """Write a deterministic synthetic EDGAR-shaped folder (same seed, same bytes) and return its manifest."""
    root = Path(root)
    years = tuple(sorted(set(fiscal_years)))
    if not years or companies < 1:
        raise ValueError("need at least one company and one fiscal year")
    if companies > len(_NAME_STEMS):
        raise ValueError(f"at most {len(_NAME_STEMS)} sample companies")
    manifest = SampleManifest(root=root, kind="synthetic", seed=seed, fiscal_years=years)
    specs = [_company(i, seed) for i in range(companies)]

    # Defects go to distinct filings; a slot moves to the next company when its filing is taken.
    defects: dict[tuple[int, str, int, int | None], str] = {}
    for defect, preferred, form, which, quarter in _DEFECT_SLOTS:
        for offset in range(companies):
            key = ((preferred + offset) % companies, form, years[which], quarter)
            if key not in defects:
                defects[key] = defect
                break
    amendment_company = 5 % companies
    restating_10k, restating_10q = 7 % companies, 9 % companies

    tickers_json: dict[str, dict[str, Any]] = {}
    for index, (company, sector, cal) in enumerate(specs):
        rng = random.Random(f"filings:{seed}:{company.cik}")
        last_end = _year_end(cal, years[-1])
        company = SampleCompany(company.cik, company.ticker, company.name, company.sector,
                                f"{last_end:%m%d}", company.week_based)
        manifest.companies.append(company)
        tickers_json[str(index)] = {"cik_str": int(company.cik), "ticker": company.ticker, "title": company.name}
        pool = _risk_pool(sector, random.Random(f"risks:{seed}:{company.cik}"))
        accessions = _Accessions(company.cik, rng)
        rows: list[_Row] = []
        variant = _HEADING_VARIANTS[(index + seed) % len(_HEADING_VARIANTS)]

        def emit(plan: _Plan, filed: date, defect: str | None, expected: str | None, note: str = "",
                 amends: str | None = None) -> str:
            accession = accessions.next(filed)
            doc_rng = random.Random(f"doc:{seed}:{accession}")
            if plan.amendment:
                suffix = plan.form.lower().replace("-", "").replace("/", "")
                document = f"{company.ticker.lower()}-{plan.period_end:%Y%m%d}x{suffix}.htm"
            else:
                document = f"{company.ticker.lower()}-{plan.period_end:%Y%m%d}.htm"
            charset = "windows-1252" if defect == "cp1252" else None
            text, headings, span = _render(plan, doc_rng, charset)
            if defect == "cp1252":
                content = text.encode("cp1252", errors="xmlcharrefreplace")
                note = note or "encoded as windows-1252 (raw 0x92/0x93/0x94 quote bytes), declared in a meta tag"
            else:
                content = text.encode("ascii", errors="xmlcharrefreplace")
            if defect == "empty":
                content, headings = b"", []
                note = "zero-byte primary document"
            elif defect == "truncated":
                start, end = span
                cut_chars = start + (end - start) * 3 // 5
                cut = len(text[:cut_chars].encode("ascii", errors="xmlcharrefreplace"))
                content = content[:cut]
                kept = text[:cut_chars]
                headings = [h for h in headings if _e(h) in kept]
                note = (f"truncated at byte {cut} of {len(text)}, inside Item 1A: no closing tags; lenient HTML "
                        "parsing recovers the risk factors before the cut")
            rel = archive_path(company.cik, accession, document)
            atomic_write(root / rel, content)
            rows.append(_Row(accession, filed, plan.period_end, plan.form, document, plan.form, len(content)))
            manifest.filings.append(SampleFiling(
                cik=company.cik, ticker=company.ticker, entity_name=company.name, form=plan.form,
                accession_number=accession, filing_date=filed.isoformat(), report_date=plan.period_end.isoformat(),
                fiscal_year=plan.fiscal_year, fiscal_period=plan.period, primary_document=document,
                archive_path=rel, expected_status=expected, defect=defect, note=note,
                risk_factor_headings=tuple(headings), amends=amends,
            ))
            return accession

        for fy in (years[0] - 1, *years):
            year_rng = random.Random(f"year:{seed}:{company.cik}:{fy}")
            risks = _year_version(pool, sector, year_rng)
            prior_end = _year_end(cal, fy - 1)
            fy_end = _year_end(cal, fy)
            if fy >= years[0]:
                for q, q_end in enumerate(_quarter_ends(cal, fy), start=1):
                    defect = defects.get((index, "10-Q", fy, q))
                    roll = random.Random(f"q:{seed}:{company.cik}:{fy}:{q}").random()
                    mode = "nmc" if roll < 0.55 else ("restate" if roll < 0.88 else "omitted")
                    restated = year_rng.sample(risks, min(len(risks), year_rng.randint(2, 4)))
                    plan = _Plan(company, sector, "10-Q", fy, f"Q{q}", prior_end + timedelta(days=1), q_end,
                                 prior_end, restated, variant, q_mode=mode)
                    expected = {"nmc": "no_material_changes", "restate": "extracted", "omitted": "not_found"}[mode]
                    note = "no Part II Item 1A at all" if mode == "omitted" else ""
                    filed_q = q_end + timedelta(days=rng.randint(30, 42))
                    original = emit(plan, filed_q, defect, _EXPECTED[defect] if defect else expected, note)
                    if index == restating_10q and fy == years[0] and q == 2 and not defect:
                        amended = _amended_risks(restated, pool, sector, random.Random(f"amend:{seed}:{original}"))
                        amend = _Plan(company, sector, "10-Q/A", fy, f"Q{q}", prior_end + timedelta(days=1), q_end,
                                      prior_end, amended, variant, q_mode="restate", amendment=True, restates=True,
                                      original_filed=filed_q)
                        emit(amend, filed_q + timedelta(days=rng.randint(20, 35)), None, "extracted",
                             "restates Part II Item 1A of the 10-Q it amends (one risk revised, one added)", original)
            defect = defects.get((index, "10-K", fy, None))
            k_mode = {"no_risk_factors": "missing", "incorporated_by_reference": "incorporated"}.get(defect or "",
                                                                                                  "normal")
            plan = _Plan(company, sector, "10-K", fy, "FY", prior_end + timedelta(days=1), fy_end, fy_end, risks,
                         variant, k_mode=k_mode)
            filed_10k = fy_end + timedelta(days=rng.randint(50, 75))
            note = {"missing": "10-K without an Item 1A section (and no RISK FACTORS heading)",
                    "incorporated": "Item 1A incorporates the risk factors by reference to Exhibit 13"}.get(k_mode, "")
            if fy < years[0]:
                note = "outside the requested fiscal years (period filtering)"
            original = emit(plan, filed_10k, defect, _EXPECTED[defect] if defect else "extracted", note)
            if index == restating_10k and fy == years[-1] and not defect:
                amended = _amended_risks(risks, pool, sector, random.Random(f"amend:{seed}:{original}"))
                amend = _Plan(company, sector, "10-K/A", fy, "FY", prior_end + timedelta(days=1), fy_end, fy_end,
                              amended, variant, amendment=True, restates=True, original_filed=filed_10k)
                emit(amend, filed_10k + timedelta(days=rng.randint(30, 45)), None, "extracted",
                     "restates Item 1A of the 10-K it amends (one risk revised, one added)", original)
            if index == amendment_company and fy == years[0]:
                amend = _Plan(company, sector, "10-K/A", fy, "FY", prior_end + timedelta(days=1), fy_end, fy_end, [],
                              "workiva", amendment=True)
                emit(amend, filed_10k + timedelta(days=rng.randint(100, 115)), None, "not_found",
                     "Part III-only amendment: no Item 1A", original)

        # A few current reports, so that form filtering has something to drop.
        for k in range(2):
            filed = _year_end(cal, years[k % len(years)]) + timedelta(days=rng.randint(20, 40))
            accession = accessions.next(filed)
            document = f"{company.ticker.lower()}-{filed:%Y%m%d}x8k.htm"
            body = (f"<html><head><title>{company.ticker} 8-K</title></head><body><p>FORM 8-K</p><p>"
                    f"{_e(company.name)}</p><p>Item 2.02 Results of Operations and Financial Condition.</p><p>"
                    "The registrant issued a press release announcing its results, furnished as Exhibit 99.1."
                    "</p></body></html>\n").encode("ascii", errors="xmlcharrefreplace")
            rel = archive_path(company.cik, accession, document)
            atomic_write(root / rel, body)
            event = filed - timedelta(days=rng.randint(0, 3))
            rows.append(_Row(accession, filed, event, "8-K", document, "8-K", len(body)))
            manifest.other_documents.append(rel)

        _write_submissions(root, company, sector, rows, older_page=index == 0 and len(rows) > 4)

    manifest.filings.sort(key=lambda f: (f.cik, f.report_date, f.form, f.accession_number))
    manifest.other_documents.sort()
    manifest.write()
    # Written last: its presence marks a complete corpus.
    atomic_write(root / "files" / "company_tickers.json", _json_bytes(tickers_json))
    return manifest


def _columns(rows: list[_Row], cik: str) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {c: [] for c in SUBMISSION_COLUMNS}
    for i, row in enumerate(rows):
        cols["accessionNumber"].append(row.accession)
        cols["filingDate"].append(row.filing_date.isoformat())
        cols["reportDate"].append(row.report_date.isoformat() if row.report_date else "")
        cols["acceptanceDateTime"].append(f"{row.filing_date.isoformat()}T16:{(i * 7) % 60:02d}:00.000Z")
        cols["act"].append("34")
        cols["form"].append(row.form)
        cols["fileNumber"].append(f"001-{30000 + int(cik) % 10000:05d}")
        cols["filmNumber"].append(f"{int(cik) % 10**6 * 100 + i:08d}")
        cols["items"].append("2.02,9.01" if row.form == "8-K" else "")
        cols["size"].append(row.size)
        cols["isXBRL"].append(0 if row.form == "8-K" else 1)
        cols["isInlineXBRL"].append(0 if row.form == "8-K" else 1)
        cols["primaryDocument"].append(row.document)
        cols["primaryDocDescription"].append(row.description)
    return cols


def _write_submissions(root: Path, company: SampleCompany, sector: _Sector, rows: list[_Row],
                       older_page: bool) -> None:
    rows = sorted(rows, key=lambda r: (r.filing_date, r.accession), reverse=True)
    files: list[dict[str, Any]] = []
    if older_page:
        # The oldest rows go to a paginated page, as EDGAR does for long histories.
        recent, old = rows[:-2], rows[-2:]
        name = f"CIK{company.cik}-submissions-001.json"
        atomic_write(root / "submissions" / name, _json_bytes(_columns(old, company.cik)))
        files.append({"name": name, "filingCount": len(old), "filingFrom": old[-1].filing_date.isoformat(),
                      "filingTo": old[0].filing_date.isoformat()})
        rows = recent
    state = _STATES[int(company.cik) % len(_STATES)]
    city = _CITIES[int(company.cik) % len(_CITIES)]
    address = {"street1": "100 COMMERCE WAY", "street2": None, "city": city[0].upper(), "stateOrCountry": city[1],
               "zipCode": city[2], "stateOrCountryDescription": city[1]}
    data = {
        "cik": str(int(company.cik)), "entityType": "operating", "sic": sector.sic,
        "sicDescription": sector.sic_description, "insiderTransactionForOwnerExists": 0,
        "insiderTransactionForIssuerExists": 1, "name": company.name, "tickers": [company.ticker],
        "exchanges": ["Nasdaq"], "ein": _fake_ein(company.cik).replace("-", ""), "description": "", "website": "",
        "investorWebsite": "", "category": "Large accelerated filer", "fiscalYearEnd": company.fiscal_year_end,
        "stateOfIncorporation": state[0], "stateOfIncorporationDescription": state[1],
        "addresses": {"mailing": address, "business": address}, "phone": "555-010-0000", "flags": "",
        "formerNames": [], "filings": {"recent": _columns(rows, company.cik), "files": files},
    }
    atomic_write(root / "submissions" / submissions_name(company.cik), _json_bytes(data))


# ---------------------------------------------------------------------------
# Mirror of the real shared samples
# ---------------------------------------------------------------------------

_SAMPLE_NAME_RE = re.compile(
    r"^(?P<ticker>[A-Z.\-]+)_(?P<form>10-[KQ](?:/A)?)_(?P<report>\d{4}-\d{2}-\d{2})(?:_(?P<acc>\d{10}-\d{2}-\d{6}))?\.html?$"
)
_FYE_RE = re.compile(r'name="dei:CurrentFiscalYearEndDate"[^>]*>([^<]{1,40})<')
_REAL_EXPECTED = {
    ("AAPL", "10-K"): ("extracted", "standard Item 1A"),
    ("AAPL", "10-Q"): ("no_material_changes", "Part II Item 1A says there were no material changes"),
    ("GE", "10-K"): ("extracted", "RISK FACTORS heading without Item 1A, plus a Form 10-K cross-reference index"),
    ("JNJ", "10-Q"): ("not_found", "no Part II Item 1A at all"),
    ("NVDA", "10-K"): ("extracted", "standard Item 1A; 52/53-week fiscal year"),
    ("NVDA", "10-Q"): ("extracted", "Part II Item 1A restates substantive risk factors"),
    ("ORCL", "10-Q"): ("incorporated_by_reference", "heading split by inline tags; Item 1A only points to the 10-K"),
    ("V", "10-K"): ("extracted", "standard Item 1A"),
    ("WFC", "10-K"): ("incorporated_by_reference", "Item 1A incorporated by reference; one paragraph"),
}


def synthetic_accession(file_name: str, report_date: str) -> str:
    """A stable accession number for a sample file that has none (filer prefix 0009999999, never a real filer)."""
    digest = int(hashlib.sha256(file_name.encode("utf-8")).hexdigest(), 16)
    return f"0009999999-{int(report_date[2:4]):02d}-{digest % 10**6:06d}"


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        target.symlink_to(source.resolve())
    except OSError:
        shutil.copyfile(source, target)


def mirror_shared_samples(shared_dir: Path, root: Path) -> SampleManifest:
    """Lay the real shared samples (filings/ + api/) out as a local EDGAR-shaped folder under `root`."""
    shared_dir, root = Path(shared_dir), Path(root)
    api, filings_dir = shared_dir / "api", shared_dir / "filings"
    tickers_raw = json.loads((api / "company_tickers.json").read_bytes())
    index = parse_company_tickers(tickers_raw)
    manifest = SampleManifest(root=root, kind="shared-mirror", seed=None, fiscal_years=())
    (root / "files").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(api / "company_tickers.json", root / "files" / "company_tickers.json")

    submissions: dict[str, dict[str, Any]] = {}
    for path in sorted(api.glob("CIK*.json")):
        if m := re.fullmatch(r"CIK(\d{10})\.submissions\.json", path.name):
            submissions[m[1]] = json.loads(path.read_bytes())
        else:
            (root / "submissions").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, root / "submissions" / path.name)

    added: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(filings_dir.glob("*.htm*")):
        m = _SAMPLE_NAME_RE.match(path.name)
        if not m:
            continue
        ticker, form, report = m["ticker"], m["form"], m["report"]
        cik, title = index.get(ticker.replace(".", "-"), (None, ""))
        if cik is None:
            raise ValueError(f"{path.name}: ticker {ticker} is not in {api / 'company_tickers.json'}")
        head = path.read_bytes().decode("utf-8", errors="replace")
        fye_match = _FYE_RE.search(head)
        fye = parse_fiscal_year_end(html.unescape(fye_match[1])) if fye_match else None
        notes = []
        accession = m["acc"]
        synthetic = accession is None
        if synthetic:
            accession = synthetic_accession(path.name, report)
            notes.append("no accession number in the file name: synthetic accession derived from it")
        company = submissions.get(cik)
        row_index = None
        if company is not None:
            recent = company["filings"]["recent"]
            if accession in recent["accessionNumber"]:
                row_index = recent["accessionNumber"].index(accession)
        if row_index is not None:
            recent = company["filings"]["recent"]
            document = recent["primaryDocument"][row_index]
            filed = recent["filingDate"][row_index]
        else:
            document = path.name
            lag = 60 if form.startswith("10-K") else 35
            filed = (date.fromisoformat(report) + timedelta(days=lag)).isoformat()
            notes.append(f"filing date estimated as report date + {lag} days")
            added.setdefault(cik, []).append({
                "accessionNumber": accession, "filingDate": filed, "reportDate": report,
                "acceptanceDateTime": "", "act": "34", "form": form, "fileNumber": "", "filmNumber": "", "items": "",
                "size": path.stat().st_size, "isXBRL": 1, "isInlineXBRL": 1, "primaryDocument": document,
                "primaryDocDescription": form, "_fye": fye, "_ticker": ticker, "_name": title,
            })
        rel = archive_path(cik, accession, document)
        _place(path, root / rel)
        company_fye = (company or {}).get("fiscalYearEnd") or fye
        fy, period, _ = fiscal_period(report, company_fye, form)
        expected, hint = _REAL_EXPECTED.get((ticker, form.removesuffix("/A")), (None, ""))
        manifest.filings.append(SampleFiling(
            cik=cik, ticker=ticker, entity_name=(company or {}).get("name") or title, form=form,
            accession_number=accession, filing_date=filed, report_date=report, fiscal_year=fy,
            fiscal_period=period, primary_document=document, archive_path=rel, expected_status=expected,
            note="; ".join([hint, *notes]).strip("; "), source=str(path), synthetic_accession=synthetic,
        ))

    for cik, rows in added.items():
        if cik not in submissions:
            first = rows[0]
            fye = next((r["_fye"] for r in rows if r["_fye"]), None)
            if fye is None:
                fye = next((r["reportDate"][5:7] + r["reportDate"][8:10] for r in rows if r["form"] == "10-K"), "1231")
            submissions[cik] = {
                "cik": str(int(cik)), "entityType": "operating", "name": first["_name"],
                "tickers": [first["_ticker"]], "exchanges": [], "fiscalYearEnd": fye,
                "filings": {"recent": {c: [] for c in SUBMISSION_COLUMNS}, "files": []},
            }
        recent = submissions[cik]["filings"]["recent"]
        for row in sorted(rows, key=lambda r: r["filingDate"]):
            n = len(recent.get("accessionNumber", []))
            for column in [*recent, *(c for c in SUBMISSION_COLUMNS if c not in recent)]:
                values = recent.setdefault(column, [""] * n)
                values.insert(0, row.get(column, ""))
    for cik, data in submissions.items():
        atomic_write(root / "submissions" / submissions_name(cik), _json_bytes(data))

    manifest.companies = sorted(
        {SampleCompany(f.cik, f.ticker, f.entity_name, "", str(submissions[f.cik].get("fiscalYearEnd", "")), False)
         for f in manifest.filings},
        key=lambda c: c.cik,
    )
    manifest.filings.sort(key=lambda f: (f.cik, f.report_date, f.form))
    manifest.fiscal_years = tuple(sorted({f.fiscal_year for f in manifest.filings}))
    manifest.write()
    return manifest


def file_amendment(root: Path, original_accession: str, accession: str, filed: date, document: bytes) -> str:
    """File an amendment of a filing in a local EDGAR-shaped folder: its document under the archive and a row in
    the company's submissions (form `<original form>/A`, same period), as EDGAR lists one; returns its archive path."""
    root = Path(root)
    for path in sorted((root / "submissions").glob("CIK*.json")):
        data = json.loads(path.read_bytes())
        recent = data.get("filings", {}).get("recent", data)
        if original_accession not in recent.get("accessionNumber", []):
            continue
        row = {column: values[recent["accessionNumber"].index(original_accession)] for column, values in recent.items()}
        form = str(row["form"]).removesuffix("/A") + "/A"
        name = f"{Path(str(row['primaryDocument'])).stem}x{form.lower().replace('-', '').replace('/', '')}.htm"
        row.update(accessionNumber=accession, filingDate=filed.isoformat(), form=form, primaryDocument=name,
                   primaryDocDescription=form, size=len(document), acceptanceDateTime=f"{filed.isoformat()}T16:00:00.000Z")
        for column, values in recent.items():
            values.insert(0, row[column])
        cik = normalize_cik(data.get("cik") or path.stem.removeprefix("CIK")[:10])
        rel = archive_path(cik, accession, name)
        atomic_write(root / rel, document)
        atomic_write(path, _json_bytes(data))
        return rel
    raise ValueError(f"no company in {root / 'submissions'} lists filing {original_accession}")
