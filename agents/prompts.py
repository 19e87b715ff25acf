"""The conversations around the check, as LINE message objects: welcome, sign-up questions, the
confirmation card, the phone number, invitations, and the group's introduction. Pure.

Every answer a resident gives is a button (quick replies, then one card to confirm): no typing,
except the phone number for 見守り, which staff must have. Sentences are short and polite, for
readers of any age. The buttons carry the choices made so far (agents/signup.py).
"""
from __future__ import annotations

from urllib.parse import quote

from agents import invitation, signup
from agents.blocks import MUTED_COLOR, WARN_COLOR, card
from agents.blocks import button as _button
from agents.blocks import text as _text
from agents.member import INVITE_VALID_FOR, NEEDS_PHONE
from agents.clock import DAY
from schemas import effects as fx
from schemas.effects import Effect
from schemas.settings import EIGHT_DAY_WARNING, NOTIFY, WATCH, past_the_eight_day_line

SETUP_ACTION, ENROLL_ACTION, INVITE_ACTION, MYPAGE_ACTION = "setup", "enroll", "invite", "mypage"
QUICK_REPLY_MAX = 13
QUICK_LABEL_MAX = 20

SERVICE_NAMES = {WATCH: "見守り", NOTIFY: "安否通知"}
SERVICE_HELP = {WATCH: "お返事がないとき、担当の職員からお電話します。",
                NOTIFY: "お返事がないとき、ご家族などにLINEでお知らせします。"}
INTERVAL_NAMES = {"1d": "毎日", "2d": "2日に1回", "3d": "3日に1回", "5d": "5日に1回", "weekly": "毎週",
                  "biweekly": "2週間に1回", "30d": "30日に1回"}
WEEKDAY_NAMES = {"mon": "月曜日", "tue": "火曜日", "wed": "水曜日", "thu": "木曜日", "fri": "金曜日",
                 "sat": "土曜日", "sun": "日曜日"}
TIMES = (6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20)   # hours offered; My Page takes any minute

WELCOME_TEXT = ("友だち追加ありがとうございます。\n"
                "数日に1回、「お元気ですか？」とお送りします。ボタンを1回押すだけで、お返事になります。")
QUESTIONS = {
    signup.SERVICE: "どちらを使いますか？\n" + "\n".join(f"・{SERVICE_NAMES[s]}：{SERVICE_HELP[s]}"
                                                 for s in (WATCH, NOTIFY)),
    signup.INTERVAL: "どのくらいの間隔で、お送りしましょうか？",
    signup.WEEKDAY: "何曜日にお送りしましょうか？",
    signup.TIME: "何時ごろにお送りしましょうか？",
    signup.AREA: "お住まいの地区を教えてください。\n大きな地震のとき、地区ごとに「ご無事ですか？」とお送りします。",
}
NO_AREA_LABEL = "選ばない"
POSTBACK_MAX = 300
PHONE_REQUEST = ("見守りでは、お返事がないときに職員からお電話します。\n"
                 "お電話番号を、数字で送ってください。（例：09012345678）")
PHONE_SAVED_TEXT = "お電話番号を登録しました。ありがとうございます。"
INVITE_OFFER = "お返事がないときにお知らせする方（ご家族など）を、招待しましょう。"
CONTACT_ADDED_TEXT = ("連絡先に登録しました。ありがとうございます。\n"
                      "お返事がないときは、このLINEでお知らせします。")
ACKNOWLEDGED_TEXT = ("ありがとうございます。よろしくお願いいたします。\n"
                     "ご本人と連絡がつかず心配なときは、ためらわずに110番・119番へご連絡ください。")
PRIVACY_TEXT = ("お預かりするのは、LINEのID、お電話番号（見守りのとき）、お返事の記録です。"
                "安否の確認と、そのための連絡にだけ使います。退会すると、すべて消します。")
PRIVACY_HEADING = "個人情報の取り扱い"
CODE_REFUSED_TEXT = ("その登録番号は使えませんでした。\n"
                     "紙に書かれた番号を、もう一度お確かめください。わからないときは、市役所の担当にお問い合わせください。")
WITHDRAW_ACTION = "withdraw"
WITHDRAW_WORDS = frozenset({"退会", "退会する", "退会します", "退会したい", "退会したいです"})  # typed, after NFKC
WITHDRAW_LABEL, WITHDRAW_NOT_LABEL = "退会する", "退会しない"
WITHDRAW_ASK_TEXT = ("退会しますか？\n"
                     "退会すると、お元気かの確認が止まり、\n"
                     "お預かりしている記録は、すべて消えます。")
WITHDRAWN_TEXT = ("退会の手続きが終わりました。\n"
                  "お預かりしていた記録は、すべて消しました。\n"
                  "これまで、ありがとうございました。\n"
                  "また使いたいときは、メニューの「マイページ」を押してください。")
LEAVE_LABEL = "連絡先をやめる"
LEAVE_ACTION = "leave"
NIGHTS_ACTION = "nights"
NIGHTS_QUIET_LABEL, NIGHTS_ANY_LABEL = "夜は知らせない（21時〜7時）", "夜も知らせる"
NIGHTS_QUIET_TEXT = ("夜9時から朝7時までのお知らせは、朝7時にお送りします。\n"
                     "その間にお返事がないときは、担当の職員が対応します。")
NIGHTS_ANY_TEXT = "夜でも、すぐにお知らせします。"
LEFT_AS_CONTACT_TEXT = ("連絡先をやめました。これからは、お知らせをお送りしません。\n"
                        "また連絡先になるときは、ご本人から招待を送ってもらってください。")
CONTACT_LEFT_TEXT = ("連絡先の方が1人、連絡先をやめました。\n"
                     "ほかの方を連絡先にするときは、「家族を招待する」から招待を送ってください。")
ACK_NOT_NEEDED_TEXT = "ご本人から、すでにお返事がありました。ご安心ください。お気づかい、ありがとうございます。"
MYPAGE_UNAVAILABLE = "マイページは、まだご用意できていません。お手数ですが、市の窓口にお問い合わせください。"
STAFF_LINKED_TEXT = ("このLINEに、職員のお知らせ（{login}）が届くようになりました。\n"
                     "職員の対応が必要な連絡が来ると、ここでお知らせします。")
STAFF_LINK_REFUSED_TEXT = ("このコードは使えませんでした。期限が過ぎたか、すでに使われています。\n"
                           "管理画面で、もう一度コードを出してください。")
INVITE_REFUSED_TEXT = ("この招待は使えませんでした。期限が過ぎたか、すでに使われています。\n"
                       "お手数ですが、もう一度招待を送ってもらってください。")


def clock_label(minute: int) -> str:
    """「午前9時」「午後3時30分」「お昼の12時」: the way people say it."""
    hour, rest = divmod(minute, 60)
    tail = f"{rest}分" if rest else ""
    if hour == 12 and not rest:
        return "お昼の12時"
    if hour < 12:
        return f"午前{hour}時{tail}"
    return f"午後{hour - 12}時{tail}"


def schedule_label(choices: signup.Choices) -> str:
    """「毎週 月曜日 午前9時」."""
    parts = [INTERVAL_NAMES[choices.interval]]
    if choices.weekday is not None:
        parts.append(WEEKDAY_NAMES[choices.weekday])
    parts.append(clock_label(choices.minute))
    return " ".join(parts)


# --- building blocks ------------------------------------------------------------------------------


def _postback(label: str, data: str) -> dict:
    return {"type": "postback", "label": label[:QUICK_LABEL_MAX], "data": data, "displayText": label}


def _setup_data(choices: signup.Choices) -> str:
    rest = signup.encode(choices)
    return f"action={SETUP_ACTION}" + (f"&{rest}" if rest else "")


def _quick(text: str, actions: list[dict]) -> dict:
    return {"type": "text", "text": text,
            "quickReply": {"items": [{"type": "action", "action": a} for a in actions[:QUICK_REPLY_MAX]]}}


def _card(alt: str, body: list[dict], buttons: list[dict]) -> dict:
    return card(alt, body, buttons, spacing="sm")


# --- sign-up --------------------------------------------------------------------------------------


def offered_areas(choices: signup.Choices, areas) -> tuple[tuple[str, str], ...]:
    """The tenant's areas (id, name) sign-up can offer as quick replies: all of them, when they fit
    (with 「選ばない」, at most 13 buttons, each one's data within LINE's 300 characters); else none,
    and the resident chooses on My Page."""
    areas = tuple(areas)
    if not areas or len(areas) >= QUICK_REPLY_MAX:
        return ()
    fits = all(len(f"action={ENROLL_ACTION}&" + signup.encode(choices.with_(area=a))) <= POSTBACK_MAX
               for a, _ in areas)
    return areas if fits else ()


def question(choices: signup.Choices, long_intervals: bool = True, areas=(), privacy: str = PRIVACY_TEXT) -> dict:
    """The next question, with one quick-reply button per answer; or the card to confirm.
    `long_intervals` False: the tenant does not offer schedules past the 8-day line; `areas`: the
    tenant's (id, name), asked after the time where they fit as quick replies."""
    areas = offered_areas(choices, areas)
    which = signup.next_question(choices, bool(areas))
    if which == signup.SERVICE:
        answers = [(SERVICE_NAMES[s], choices.with_(service=s)) for s in (WATCH, NOTIFY)]
    elif which == signup.INTERVAL:
        answers = [(name, choices.with_(interval=i)) for i, name in INTERVAL_NAMES.items()
                   if long_intervals or not past_the_eight_day_line(i)]
    elif which == signup.WEEKDAY:
        answers = [(name, choices.with_(weekday=w)) for w, name in WEEKDAY_NAMES.items()]
    elif which == signup.TIME:
        answers = [(clock_label(h * 60), choices.with_(minute=h * 60)) for h in TIMES]
    elif which == signup.AREA:
        answers = [(name, choices.with_(area=a)) for a, name in areas]
        answers.append((NO_AREA_LABEL, choices.with_(area=signup.NO_AREA)))
    else:
        return confirm_card(choices, dict(areas), privacy)
    return _quick(QUESTIONS[which], [_postback(label, _setup_data(c)) for label, c in answers])


def confirm_card(choices: signup.Choices, area_names=None, privacy: str = PRIVACY_TEXT) -> dict:
    """What will be stored, the tenant's privacy notice (read before anything is), and 「登録する」."""
    rows = [_text("この内容で登録します", size="xl", weight="bold"),
            _text(f"サービス：{SERVICE_NAMES[choices.service]}", size="lg"),
            _text(SERVICE_HELP[choices.service], size="md", color=MUTED_COLOR),
            _text(f"お送りする日時：{schedule_label(choices)}", size="lg")]
    if area_names and choices.area in area_names:
        rows.append(_text(f"お住まいの地区：{area_names[choices.area]}", size="lg"))
    if past_the_eight_day_line(choices.interval):
        rows.append(_text(f"ご注意：この間隔では、{EIGHT_DAY_WARNING}。毎日か数日ごとがおすすめです。",
                          size="md", color=WARN_COLOR))
    rows += [_text(PRIVACY_HEADING, size="md", weight="bold"), _text(privacy, size="sm", color=MUTED_COLOR)]
    enroll = _postback("登録する", f"action={ENROLL_ACTION}&{signup.encode(choices)}")
    again = _postback("やり直す", f"action={SETUP_ACTION}")
    alt = f"この内容で登録します：{SERVICE_NAMES[choices.service]}、{schedule_label(choices)}"
    return _card(alt, rows, [_button(enroll), _button(again, primary=False)])


def welcome() -> list[dict]:
    return [{"type": "text", "text": WELCOME_TEXT}, question(signup.Choices())]   # the service: any tenant


def enrolled(data: str) -> list[dict]:
    choices = signup.parse(data)
    text = (f"登録しました。{schedule_label(choices)}ごろに「お元気ですか？」とお送りします。\n"
            "届いたら「元気です」を押してください。")
    out = [{"type": "text", "text": text}]
    if NEEDS_PHONE in data.split("&"):
        out.append({"type": "text", "text": PHONE_REQUEST})
    elif choices.service == NOTIFY:
        out.append(_quick(INVITE_OFFER, [_postback("家族を招待する", f"action={INVITE_ACTION}")]))
    return out


# --- invitations ----------------------------------------------------------------------------------


def invitation_card(code: str, friend_url: str = "") -> dict:
    """A button that opens LINE's share screen with the invitation ready to send."""
    days = INVITE_VALID_FOR // DAY
    step1 = (f"1. こちらを友だち追加してください：{friend_url}" if friend_url
             else "1. この安否確認のLINE公式アカウントを、友だち追加してください。")
    shared = ("安否確認の連絡先になっていただけますか。お返事がないとき、LINEでお知らせが届きます。\n"
              f"{step1}\n2. 友だち追加のあと、次の1行をそのまま送ってください。\n{invitation.message(code)}")
    share = {"type": "uri", "label": "招待を送る", "uri": "https://line.me/R/share?text=" + quote(shared)}
    rows = [_text("ご家族などを招待します", size="xl", weight="bold"),
            _text("下のボタンを押して、招待を送る相手を選んでください。", size="lg"),
            _text(f"招待は1回かぎり、{days}日間使えます。", size="md", color=MUTED_COLOR)]
    return _card("ご家族などを招待します。ボタンを押して、招待を送ってください。", rows, [_button(share)])


# --- groups ---------------------------------------------------------------------------------------


def group_welcome(data: str) -> dict:
    choices = signup.parse(data)
    text = ("このグループで「つながり」を始めます。\n"
            f"{schedule_label(choices)}に「みなさん、お元気ですか？」とお送りします。"
            "お元気な方は「元気です」を押してください。\n"
            "23時間たってもまだの方がいれば、お名前をお知らせします。お近くの方は声をかけてあげてください。")
    return {"type": "text", "text": text}


# --- effect -> messages ---------------------------------------------------------------------------


# --- My Page --------------------------------------------------------------------------------------


def nights_button(member: str, quiet: bool) -> dict:
    """A contact's choice of notices at night, for one resident: the button offers the other one."""
    return _postback(NIGHTS_QUIET_LABEL if quiet else NIGHTS_ANY_LABEL,
                     f"action={NIGHTS_ACTION}&member={member}&quiet={1 if quiet else 0}")


def mypage_card(url: str | None) -> dict:
    if not url:
        return {"type": "text", "text": MYPAGE_UNAVAILABLE}
    rows = [_text("マイページ", size="xl", weight="bold"),
            _text("お送りする日時の変更、お休み、連絡先の確認ができます。", size="lg"),
            _text("このボタンは30分間使えます。", size="md", color=MUTED_COLOR)]
    return _card("マイページを開くボタンです。", rows,
                 [_button({"type": "uri", "label": "マイページを開く", "uri": url})])


def messages(effect: Effect, friend_url: str = "", mypage=None, long_intervals: bool = True, areas=(),
             privacy: str = PRIVACY_TEXT) -> list[dict]:
    """`mypage`: (member, at) -> a signed My Page URL, or None where My Page is not served.
    `long_intervals`: the tenant offers schedules past the 8-day line; `areas`: its (id, name)."""
    kind = effect.effect
    if kind == fx.MYPAGE_LINK:
        return [mypage_card(mypage(effect.subject, effect.at) if mypage else None)]
    if kind == fx.WELCOME:
        return welcome()
    if kind == fx.SETUP_PROMPT:
        return [question(signup.parse(effect.data or ""), long_intervals, areas, privacy)]
    if kind == fx.ENROLLED:
        return enrolled(effect.data or "")
    if kind == fx.PHONE_SAVED:
        return [{"type": "text", "text": PHONE_SAVED_TEXT}]
    if kind == fx.INVITE_CREATED:
        return [invitation_card(effect.data or "", friend_url)]
    if kind == fx.CONTACT_ADDED:  # to the new contact: quiet nights, and how to stop, should they wish to
        leave = _postback(LEAVE_LABEL, f"action={LEAVE_ACTION}&member={effect.subject}")
        return [_card(CONTACT_ADDED_TEXT.replace("\n", ""), [_text(CONTACT_ADDED_TEXT, size="lg")],
                      [_button(nights_button(effect.subject, quiet=True), primary=False),
                       _button(leave, primary=False)])]
    if kind == fx.NIGHTS_SET:
        quiet = effect.data == fx.NIGHTS_QUIET
        said = NIGHTS_QUIET_TEXT if quiet else NIGHTS_ANY_TEXT
        return [_card(said.replace("\n", ""), [_text(said, size="lg")],
                      [_button(nights_button(effect.subject, quiet=not quiet), primary=False)])]
    if kind == fx.WITHDRAW_CONFIRM:   # asked once: a slip of the finger removes nobody
        return [_card(WITHDRAW_ASK_TEXT.replace("\n", ""), [_text(WITHDRAW_ASK_TEXT, size="lg")],
                      [_button(_postback(WITHDRAW_LABEL, f"action={WITHDRAW_ACTION}")),
                       _button(_postback(WITHDRAW_NOT_LABEL, "action=ok"), primary=False)])]
    if kind == fx.WITHDRAWN:
        return [{"type": "text", "text": WITHDRAWN_TEXT}]
    if kind == fx.CODE_REFUSED:
        return [{"type": "text", "text": CODE_REFUSED_TEXT}]
    if kind == fx.LEFT_AS_CONTACT:
        return [{"type": "text", "text": LEFT_AS_CONTACT_TEXT}]
    if kind == fx.CONTACT_LEFT:
        return [{"type": "text", "text": CONTACT_LEFT_TEXT}]
    if kind == fx.INVITE_REFUSED:
        return [{"type": "text", "text": INVITE_REFUSED_TEXT}]
    if kind == fx.STAFF_LINKED:
        text = STAFF_LINKED_TEXT.format(login=effect.data) if effect.data else STAFF_LINK_REFUSED_TEXT
        return [{"type": "text", "text": text}]
    if kind == fx.GROUP_WELCOME:
        return [group_welcome(effect.data or "")]
    if kind == fx.CONTACT_ACKNOWLEDGED:
        return [{"type": "text", "text": ACKNOWLEDGED_TEXT}]
    if kind == fx.ACK_NOT_NEEDED:
        return [{"type": "text", "text": ACK_NOT_NEEDED_TEXT}]
    return []


KINDS = frozenset({fx.WELCOME, fx.SETUP_PROMPT, fx.ENROLLED, fx.PHONE_SAVED, fx.INVITE_CREATED,
                   fx.CONTACT_ADDED, fx.INVITE_REFUSED, fx.GROUP_WELCOME, fx.MYPAGE_LINK, fx.LEFT_AS_CONTACT,
                   fx.CONTACT_LEFT, fx.CONTACT_ACKNOWLEDGED, fx.ACK_NOT_NEEDED, fx.STAFF_LINKED, fx.NIGHTS_SET,
                   fx.WITHDRAW_CONFIRM, fx.WITHDRAWN, fx.CODE_REFUSED})
TO_MEMBER = frozenset({fx.CONTACT_ADDED, fx.INVITE_REFUSED, fx.CONTACT_ACKNOWLEDGED, fx.ACK_NOT_NEEDED,
                       fx.LEFT_AS_CONTACT, fx.NIGHTS_SET})  # told to the one who sent the code
