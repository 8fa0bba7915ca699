"""Class names of the zero-shot segmentation benchmarks; ', ' separates synonyms (max-pooled at prediction).

The lists follow the protocol the thesis's CLIP row matches (SCLIP's evaluation): VOC20 without background, the
150 ADE20K classes and the 171 COCO-Stuff classes, in label order.
"""

VOC20 = (
    "aeroplane", "bicycle", "bird", "ship", "bottle", "bus", "car", "cat", "chair", "cow", "table", "dog", "horse",
    "motorbike", "person, person in shirt, person in jeans, person in dress, person in sweater, person in skirt, "
    "person in jacket", "pottedplant", "sheep", "sofa", "train",
    "television monitor, tv monitor, monitor, television, screen",
)

ADE20K = tuple("""wall building sky floor tree ceiling road bed windowpane grass cabinet sidewalk person earth door table
mountain plant curtain chair car water painting sofa shelf house sea mirror rug field armchair seat fence desk rock
wardrobe lamp bathtub railing cushion base box column signboard chestofdrawers counter sand sink skyscraper fireplace
refrigerator grandstand path stairs runway case pooltable pillow screendoor stairway river bridge bookcase blind
coffeetable toilet flower book hill bench countertop stove palm kitchenisland computer swivelchair boat bar
arcademachine hovel bus towel light truck tower chandelier awning streetlight booth televisionreceiver airplane
dirttrack apparel pole land bannister escalator ottoman bottle buffet poster stage van ship fountain conveyerbelt canopy
washer plaything swimmingpool stool barrel basket waterfall tent bag minibike cradle oven ball food step tank tradename
microwave pot animal bicycle lake dishwasher screen blanket sculpture hood sconce vase trafficlight tray ashcan fan pier
crtscreen plate monitor bulletinboard shower radiator glass clock flag""".split())

COCO_STUFF = tuple("""person bicycle car motorcycle airplane bus train truck boat trafficlight firehydrant stopsign
parkingmeter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase
frisbee skis snowboard sportsball kite baseballbat baseballglove skateboard surfboard tennisracket bottle wineglass cup
fork knife spoon bowl banana apple sandwich orange broccoli carrot hotdog pizza donut cake chair couch pottedplant bed
diningtable toilet tv laptop mouse remote keyboard cellphone microwave oven toaster sink refrigerator book clock vase
scissors teddybear hairdrier toothbrush banner blanket branch bridge building-other bush cabinet cage cardboard carpet
ceiling-other ceiling-tile cloth clothes clouds counter cupboard curtain desk-stuff dirt door-stuff fence floor-marble
floor-other floor-stone floor-tile floor-wood flower fog food-other fruit furniture-other grass gravel ground-other hill
house leaves light mat metal mirror-stuff moss mountain mud napkin net paper pavement pillow plant-other plastic
platform playingfield railing railroad river road rock roof rug salad sand sea shelf sky-other skyscraper snow
solid-other stairs stone straw structural-other table tent textile-other towel tree vegetable wall-brick wall-concrete
wall-other wall-panel wall-stone wall-tile wall-wood water-other waterdrops window-blind window-other wood""".split())

assert len(VOC20) == 20 and len(ADE20K) == 150 and len(COCO_STUFF) == 171
