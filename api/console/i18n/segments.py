"""The Segments page's words."""

WORDS = {
    "segments.title": {"zh": "人群", "en": "Segments"},
    "segments.new": {"zh": "新建人群", "en": "New segment"},
    "segments.name": {"zh": "名称", "en": "Name"},
    "segments.app": {"zh": "所属应用（* 为共享）", "en": "App (* for every app)"},
    "segments.description": {"zh": "说明", "en": "Description"},
    "segments.count": {"zh": "人数", "en": "Count"},
    "segments.sample": {"zh": "样例", "en": "Sample"},
    "segments.updated": {"zh": "最后修改人", "en": "Last changed by"},
    "segments.none": {"zh": "没有可查看的人群", "en": "No segments you may read"},
    "segments.back": {"zh": "← 返回人群列表", "en": "← Back to segments"},
    "segments.definition": {"zh": "定义（YAML 或 JSON）", "en": "Definition (YAML or JSON)"},
    "segments.definition_hint": {
        "zh": "条件写法见 docs/operators/segments.md；保存前会逐项校验，错误会标明位置。",
        "en": "Conditions as in docs/operators/segments.md; each is checked before saving, errors name "
              "their place.",
    },
    "segments.counting": {"zh": "计算中…", "en": "Counting…"},
    "segments.save": {"zh": "保存", "en": "Save"},
}
