"""How the bytes of an imported file become text: UTF-8 (with or without a byte-order mark),
UTF-16 (Excel's "Unicode text"), GB18030/GBK or Big5, chosen by the person or detected.

The rule, in order:
1. A byte-order mark says UTF-8 or UTF-16.
2. A file with a NUL byte and no UTF-16 mark is binary.
3. Bytes that are valid UTF-8 are UTF-8 (plain ASCII too).
4. Otherwise the file is decoded as GB18030 and as Big5, strictly. GB18030 accepts almost any
   bytes and Big5 accepts most GBK text, so "the first that decodes" would be wrong: each
   reading is scored by the share of its non-ASCII characters that are among the
   commonest Chinese ones (less the share of private-use, unassigned or control ones), and
   the higher score wins (GB18030 on a tie). Read in the wrong encoding, Chinese text turns
   into rare characters, kana and private-use code points, and scores near zero.
5. The guess is "unsure" when the winner scores low, the two readings score close, or the
   file has too few non-ASCII characters to tell (a single rare character in Big5 can be a
   common one in GBK): the pre-flight then says so and offers to choose the encoding.
"""
from __future__ import annotations

import codecs
import unicodedata
from dataclasses import dataclass

from flask_babel import gettext as _

from .errors import Invalid

# The encodings a person can choose, as the pre-flight names them.
ENCODINGS = {"utf-8": "UTF-8", "utf-16": "UTF-16", "gb18030": "GB18030", "big5": "Big5"}
# Python's codec for each. Excel on Traditional Chinese Windows writes code page 950 (Big5 with
# Microsoft's additions); GB18030 reads GBK and GB2312 as well.
_CODECS = {"utf-8": "utf-8-sig", "utf-16": "utf-16", "gb18030": "gb18030", "big5": "cp950"}
# A sure guess scores at least this, and this far ahead of the other reading; real titles
# score 0.4 to 1, a wrong reading -0.5 to 0.3.
SURE_SCORE, SURE_MARGIN = 0.4, 0.25
# ...and is made from at least this many non-ASCII characters.
SURE_CHARACTERS = 4

# About 900 of the commonest characters of modern Chinese (news and web text), in Simplified
# and in Traditional form, and common full-width punctuation.
_COMMON_SIMPLIFIED = (
    "的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于"
    "着下自之年过发后作里用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还"
    "进好小部其些主样理心她本前开但因只从想实日军者意无力它与长把机十民第公此已工使情"
    "明性知全三又关点正业外将两高间由问很最重并物手应战向头文体政美相见被利什二等产或"
    "新己制身果加西斯月话合回特代内信表化老给世位次度门任常先海通教儿原东声提立及比员"
    "解水名真论处走义各入几口认条平系气题活尔更别打女变四神总何电数安少报才结反受目太"
    "量再感建务做接必场件计管期市直德资命山金指克许统区保至队形社便空决治展马科司五基"
    "眼书非则听白却界达光放强即像难且权思王象完设式色路记南品住告类求据程北边死张该交"
    "规万取拉格望觉术领共确传师观清今切院让识候带导争运笑飞风步改收根干造言联持组每济"
    "车亲极林服快办议往元英士证近失转夫令准布始怎呢存未远叫台单影具罗字爱击流备兵连调"
    "深商算质团集百需价花党华城石级整府离况亚请技际约示复病息究线似官火断精满支视消越"
    "器容照须九增研写称企八功吗包片史委乎查轻易早曾除农找装广显吧阿李标谈吃图念六引历"
    "首医局突专费号尽另周较注语仅考落青随选列武红响虽推势参希古众构房半节土投某案黑维"
    "革划敌致陈律足态护七兴派孩验责营星够章音跟志底站严巴例防族供效续施留讲型料终答紧"
    "黄绝奇察母京段依批群项故按河米围江织害斗双境客纪采举杀攻父苏密低朝友诉止细愿千值"
    "仍男钱破网热助倒育属坐帝限船脸职速刻乐否刚威毛状率甚独球般普怕弹校苦创假久错承印"
    "晚兰试股拿脑预谁益阳若哪微尼继送急血惊伤素药适波夜省初喜卫源食险待述陆习置居劳财"
    "环排福纳欢雷警获模充负云停木游龙树疑层冷洲冲射略范竟句室异激汉村哈策演简卡罪判担"
    "州静退既衣您宗积余痛检差富灵协角占配征修皮挥胜降阶审沉坚善妈刘读啊超免压银买皇养"
    "伊怀执副乱抗犯追帮宣佛岁航优怪香著田铁控税左右份穿艺背阵草脚概恶块顿敢守酒岛托央"
    "户烈洋哥索胡款靠评版宝座释景顾弟登货互付伯慢欧换闻危忙核暗姐介坏讨丽良序升监临亮"
    "露永呼味野架域沙掉括鱼杂误湾吉减编测败屋跑梦温困渐封救贵缺楼县移朋画班智短掌恐遗"
    "席松秘谢遇康虑季咖啡茶店铺络戏篮汽票疫苗震港圳津庆雄课购卖售惠春秋冬夏旅健"
)
_COMMON_TRADITIONAL = (
    "的一是不了在人有我他這個們中來上大為和國地到以說時要就出會可也你對生能而子那得於"
    "著下自之年過發後作裡用道行所然家種事成方多經麼去法學如都同現當沒動面起看定天分還"
    "進好小部其些主樣理心她本前開但因只從想實日軍者意無力它與長把機十民第公此已工使情"
    "明性知全三又關點正業外將兩高間由問很最重並物手應戰向頭文體政美相見被利什二等產或"
    "新己制身果加西斯月話合回特代內信表化老給世位次度門任常先海通教兒原東聲提立及比員"
    "解水名真論處走義各入幾口認條平系氣題活爾更別打女變四神總何電數安少報才結反受目太"
    "量再感建務做接必場件計管期市直德資命山金指克許統區保至隊形社便空決治展馬科司五基"
    "眼書非則聽白卻界達光放強即像難且權思王象完設式色路記南品住告類求據程北邊死張該交"
    "規萬取拉格望覺術領共確傳師觀清今切院讓識候帶導爭運笑飛風步改收根幹造言聯持組每濟"
    "車親極林服快辦議往元英士證近失轉夫令準布始怎呢存未遠叫台單影具羅字愛擊流備兵連調"
    "深商算質團集百需價花黨華城石級整府離況亞請技際約示復病息究線似官火斷精滿支視消越"
    "器容照須九增研寫稱企八功嗎包片史委乎查輕易早曾除農找裝廣顯吧阿李標談吃圖念六引歷"
    "首醫局突專費號盡另周較注語僅考落青隨選列武紅響雖推勢參希古眾構房半節土投某案黑維"
    "革劃敵致陳律足態護七興派孩驗責營星夠章音跟志底站嚴巴例防族供效續施留講型料終答緊"
    "黃絕奇察母京段依批群項故按河米圍江織害鬥雙境客紀採舉殺攻父蘇密低朝友訴止細願千值"
    "仍男錢破網熱助倒育屬坐帝限船臉職速刻樂否剛威毛狀率甚獨球般普怕彈校苦創假久錯承印"
    "晚蘭試股拿腦預誰益陽若哪微尼繼送急血驚傷素藥適波夜省初喜衛源食險待述陸習置居勞財"
    "環排福納歡雷警獲模充負雲停木遊龍樹疑層冷洲衝射略範竟句室異激漢村哈策演簡卡罪判擔"
    "州靜退既衣您宗積餘痛檢差富靈協角占配徵修皮揮勝降階審沉堅善媽劉讀啊超免壓銀買皇養"
    "伊懷執副亂抗犯追幫宣佛歲航優怪香田鐵控稅左右份穿藝背陣草腳概惡塊頓敢守酒島託央戶"
    "烈洋哥索胡款靠評版寶座釋景顧弟登貨互付伯慢歐換聞危忙核暗姐介壞討麗良序升監臨亮露"
    "永呼味野架域沙掉括魚雜誤灣吉減編測敗屋跑夢溫困漸封救貴缺樓縣移朋畫班智短掌恐遺席"
    "松秘謝遇康慮季咖啡茶店鋪絡戲籃汽票疫苗震港圳津慶雄課購賣售惠春秋冬夏旅健"
)
_COMMON = frozenset(_COMMON_SIMPLIFIED + _COMMON_TRADITIONAL
                    + "，。、：；！？“”‘’《》（）「」『』　…—·")
# Characters no spreadsheet of titles holds: private use, unassigned, C1 controls.
_ODD_CATEGORIES = ("Co", "Cn", "Cc")


@dataclass
class Decoded:
    text: str
    encoding: str  # a key of ENCODINGS
    unsure: bool = False


def decode(data: bytes, encoding: str = "") -> Decoded:
    """The file's text, in `encoding` when the person chose one, else detected (see the
    module's docstring). Invalid, naming the byte and line, when it cannot be read."""
    if encoding:
        if encoding not in ENCODINGS:
            raise _unreadable(_("Choose the file's encoding from the list."))
        return Decoded(_strict(data, encoding), encoding)
    if data.startswith(codecs.BOM_UTF8):
        return Decoded(_strict(data, "utf-8"), "utf-8")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return Decoded(_strict(data, "utf-16"), "utf-16")
    if b"\x00" in data:
        raise _unreadable(_("This is a binary file, not CSV or JSON text."))
    try:
        return Decoded(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError as exc:
        not_utf8 = exc
    readings = []
    for name in ("gb18030", "big5"):  # in this order, so that a tie goes to GB18030
        try:
            text = data.decode(_CODECS[name])
        except UnicodeDecodeError:
            continue
        readings.append((chinese_score(text), name, text))
    if not readings:
        raise _unreadable(_(
            "The file is not UTF-8, UTF-16, GB18030 or Big5 text: byte %(byte)s (line "
            "%(line)s) is not UTF-8. Save it as “CSV UTF-8” and try again.",
            **_where(data, not_utf8, "utf-8")))
    score, name, text = max(readings, key=lambda r: r[0])
    other = max((r[0] for r in readings if r[1] != name), default=None)
    unsure = (score < SURE_SCORE or (other is not None and score - other < SURE_MARGIN)
              or sum(char >= "\x80" for char in text) < SURE_CHARACTERS)
    return Decoded(text, name, unsure)


def chinese_score(text: str) -> float:
    """How much a reading looks like Chinese: the share of its non-ASCII characters that are
    common ones, less the share that are odd ones; 0 when all of it is ASCII."""
    count = hits = odd = 0
    for char in text:
        if char < "\x80":
            continue
        count += 1
        if char in _COMMON:
            hits += 1
        elif unicodedata.category(char) in _ODD_CATEGORIES:
            odd += 1
    return (hits - odd) / count if count else 0.0


def _strict(data: bytes, encoding: str) -> str:
    codec = _CODECS[encoding]
    if encoding == "utf-16" and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        codec = "utf-16-le"  # Windows writes little-endian; Python would guess the machine's
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise _unreadable(_(
            "The file cannot be read as %(encoding)s: byte %(byte)s (line %(line)s) is not "
            "%(encoding)s text.", encoding=ENCODINGS[encoding], **_where(data, exc, codec))
        ) from None


def _where(data: bytes, exc: UnicodeDecodeError, codec: str) -> dict:
    """The first unreadable byte and its line, counted from 1 as an editor does."""
    line = data[:exc.start].decode(codec, "replace").count("\n") + 1
    return {"byte": f"{exc.start + 1:,}", "line": f"{line:,}"}


def _unreadable(message: str) -> Invalid:
    return Invalid({"import_file": message})
